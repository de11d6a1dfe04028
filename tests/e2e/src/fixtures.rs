//! Inputs tests and the bench share.

/// A zip archive holding `content` as `app.py` (stored, not compressed): kaws refuses a
/// `zipFile` that is not a zip archive.
pub fn zip(content: &[u8]) -> Vec<u8> {
    crate::chaos::zip_file("app.py", content)
}

/// An AMI id moto lists (one of its short, EC2-style ids).
pub async fn moto_ami(aws: &aws_config::SdkConfig) -> anyhow::Result<String> {
    aws_sdk_ec2::Client::new(aws)
        .describe_images()
        .send()
        .await?
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| id.len() <= 21)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("moto lists no AMI"))
}

/// A new IAM role Lambda may assume, named `<prefix>-<unique>`; its ARN. moto checks that a
/// function's role exists, as Lambda does.
pub async fn lambda_role(aws: &aws_config::SdkConfig, prefix: &str) -> anyhow::Result<String> {
    aws_sdk_iam::Client::new(aws)
        .create_role()
        .role_name(crate::unique_name(prefix))
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .ok_or_else(|| anyhow::anyhow!("CreateRole returned no role"))
}
