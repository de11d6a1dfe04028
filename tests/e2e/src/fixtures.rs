//! Inputs tests and the bench share.

/// A zip archive holding `content` as `app.py` (stored, not compressed): kaws refuses a
/// `zipFile` that is not a zip archive.
pub fn zip(content: &[u8]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let name = b"app.py";
    let (crc, size) = (crc32(content), content.len() as u32);
    // Version 2.0, no flags, stored, 1980-01-01 00:00, CRC, sizes, name length, no extra.
    let fields = |out: &mut Vec<u8>| {
        for half in [20u16, 0, 0, 0, 0x21] {
            out.extend(half.to_le_bytes());
        }
        for word in [crc, size, size] {
            out.extend(word.to_le_bytes());
        }
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
    };
    let mut out = b"PK\x03\x04".to_vec();
    fields(&mut out);
    out.extend(name);
    out.extend(content);
    let directory = out.len() as u32;
    out.extend(b"PK\x01\x02");
    out.extend(20u16.to_le_bytes());
    fields(&mut out);
    // No comment, disk 0, no attributes, local header at offset 0.
    out.extend([0u8; 14]);
    out.extend(name);
    let directory_size = out.len() as u32 - directory;
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend(1u16.to_le_bytes());
    out.extend(1u16.to_le_bytes());
    out.extend(directory_size.to_le_bytes());
    out.extend(directory.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}
