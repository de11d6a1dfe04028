//! `crds/` must hold exactly what `kaws crds` generates from the code.

use std::path::PathBuf;

use kaws::{crds, resources::KINDS};

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn generated_crds_match_the_crds_directory() {
    let mut stale = Vec::new();
    for kind in KINDS {
        let path = crds_dir().join(crds::file_name(kind));
        let want = crds::to_yaml(&crds::crd(kind)).expect("CRD serializes");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if want != have {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "CRD YAML drifted from the code: {stale:?}; run `make crds` and commit the result"
    );
}

#[test]
fn every_kind_is_in_category_aws_with_a_short_name() {
    for kind in KINDS {
        let crd = crds::crd(kind);
        let names = &crd.spec.names;
        assert!(
            names
                .categories
                .as_ref()
                .is_some_and(|c| c.contains(&"aws".to_string()))
        );
        assert!(names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        for col in ["Ready", "Synced", "Age"] {
            assert!(
                columns.contains(&col),
                "{} lacks printer column {col}",
                kind.kind()
            );
        }
    }
}
