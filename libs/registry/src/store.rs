//! Artifacts in an object store.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use sha2::{Digest, Sha256};
use url::Url;

/// Why an artifact could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("MODEL_STORE_URL {0:?} is not usable: {1}")]
    BadUrl(String, String),
    #[error("object store {uri}: {source}")]
    Store {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    /// The bytes are not the ones the registry recorded.
    #[error(
        "artifact {uri} has SHA-256 {actual}, but the registry recorded {expected}: refusing it"
    )]
    Checksum {
        uri: String,
        expected: String,
        actual: String,
    },
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The settings an `s3://` store is built from: the `AWS_*` variables
/// object_store reads (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ALLOW_HTTP`,
/// `AWS_ACCESS_KEY_ID`, ...), plus `AWS_ACCESS_KEY_ID_FILE` and
/// `AWS_SECRET_ACCESS_KEY_FILE` (Docker secrets), which win over the plain
/// keys. The services take them from the process environment; tests pass
/// their own.
#[derive(Clone, Default)]
pub struct StoreSettings {
    vars: Vec<(String, String)>,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the values may be keys.
        f.debug_list()
            .entries(self.vars.iter().map(|(k, _)| k))
            .finish()
    }
}

impl StoreSettings {
    /// The `AWS_*` variables of this process.
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The `AWS_*` pairs among `pairs`.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        Self { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An S3 client builder for `bucket`, as `AmazonS3Builder::from_env`
    /// would make it from these variables, with the keys from the files.
    fn s3_builder(&self, bucket: &str) -> Result<object_store::aws::AmazonS3Builder, String> {
        let mut builder = object_store::aws::AmazonS3Builder::new();
        for (name, value) in &self.vars {
            if let Ok(key) = name.to_ascii_lowercase().parse() {
                builder = builder.with_config(key, value);
            }
        }
        with_credential_files(builder.with_bucket_name(bucket), |name| {
            self.get(name).map(Into::into)
        })
    }
}

/// The S3 keys from the files named by `AWS_ACCESS_KEY_ID_FILE` and
/// `AWS_SECRET_ACCESS_KEY_FILE` (Docker secrets), over the plain variables.
fn with_credential_files(
    mut builder: object_store::aws::AmazonS3Builder,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<object_store::aws::AmazonS3Builder, String> {
    use object_store::aws::AmazonS3ConfigKey as Key;
    for (name, key) in [
        ("AWS_ACCESS_KEY_ID_FILE", Key::AccessKeyId),
        ("AWS_SECRET_ACCESS_KEY_FILE", Key::SecretAccessKey),
    ] {
        let Some(path) = var(name) else { continue };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{name}: cannot read {}: {e}", path.to_string_lossy()))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(format!("{name}: {} is empty", path.to_string_lossy()));
        }
        builder = builder.with_config(key, value);
    }
    Ok(builder)
}

/// Builds the store and the object path for a `file://` or `s3://` URL.
fn open(url: &Url, settings: &StoreSettings) -> Result<(Arc<dyn ObjectStore>, Path), StoreError> {
    let bad = |why: String| StoreError::BadUrl(url.to_string(), why);
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| bad("not an absolute local path".into()))?;
            // The store is rooted at `/`; objects are addressed by their full
            // path, so every `file://` URI resolves the same way.
            let store = object_store::local::LocalFileSystem::new();
            let location = Path::from_absolute_path(&path).map_err(|e| bad(e.to_string()))?;
            Ok((Arc::new(store), location))
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad("no bucket name".into()))?;
            // object_store's client is reqwest on rustls without a bundled
            // crypto provider: without one installed, building it panics.
            fantasy_telemetry::install_crypto_provider();
            let store = settings
                .s3_builder(bucket)
                .map_err(bad)?
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let location = Path::from(url.path().trim_start_matches('/'));
            Ok((Arc::new(store), location))
        }
        other => Err(bad(format!("scheme {other:?}; expected file or s3"))),
    }
}

/// Where the trainer writes artifacts: `MODEL_STORE_URL`.
#[derive(Clone)]
pub struct ModelStore {
    root: Url,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore")
            .field("root", &self.root.as_str())
            .finish()
    }
}

impl ModelStore {
    /// Checks that `url` names a store this crate can open (`file://` with
    /// an absolute path, or `s3://` with a bucket and usable `AWS_*`
    /// settings), without reading or writing it: for configuration checks
    /// at start-up.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        let parsed =
            Url::parse(url).map_err(|e| StoreError::BadUrl(url.to_owned(), e.to_string()))?;
        open(&parsed, &StoreSettings::from_process()).map(drop)
    }

    /// Opens `url` (`file:///abs/path` or `s3://bucket/prefix`, set up by
    /// this process's `AWS_*` variables). A local folder is created if
    /// missing.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, &StoreSettings::from_process())
    }

    /// [`ModelStore::open`] with S3 settings of the caller's.
    pub fn open_with(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let mut root =
            Url::parse(url).map_err(|e| StoreError::BadUrl(url.to_owned(), e.to_string()))?;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        if root.scheme() == "file"
            && let Ok(dir) = root.to_file_path()
        {
            std::fs::create_dir_all(&dir).map_err(|e| {
                StoreError::BadUrl(
                    url.to_owned(),
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
        let (store, prefix) = open(&root, settings)?;
        Ok(Self {
            root,
            store,
            prefix,
        })
    }

    /// The store's root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Writes `bytes` as `<model_name>/<version>.onnx`; returns its URI and
    /// SHA-256.
    pub async fn put(
        &self,
        model_name: &str,
        version: &str,
        bytes: Vec<u8>,
    ) -> Result<(String, String), StoreError> {
        let sha256 = sha256_hex(&bytes);
        let relative = format!("{model_name}/{version}.onnx");
        let location = self
            .prefix
            .clone()
            .join(model_name)
            .join(format!("{version}.onnx"));
        let uri = self
            .root
            .join(&relative)
            .map_err(|e| StoreError::BadUrl(relative.clone(), e.to_string()))?
            .to_string();
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|source| StoreError::Store {
                uri: uri.clone(),
                source,
            })?;
        Ok((uri, sha256))
    }
}

/// Reads the artifact at `uri` and checks it against `expected_sha256`
/// (an `s3://` URI through this process's `AWS_*` variables).
pub async fn fetch_artifact(uri: &str, expected_sha256: &str) -> Result<Vec<u8>, StoreError> {
    fetch_artifact_with(uri, expected_sha256, &StoreSettings::from_process()).await
}

/// [`fetch_artifact`] with S3 settings of the caller's.
pub async fn fetch_artifact_with(
    uri: &str,
    expected_sha256: &str,
    settings: &StoreSettings,
) -> Result<Vec<u8>, StoreError> {
    let url = Url::parse(uri).map_err(|e| StoreError::BadUrl(uri.to_owned(), e.to_string()))?;
    let (store, location) = open(&url, settings)?;
    let bytes = store
        .get(&location)
        .await
        .map_err(|source| StoreError::Store {
            uri: uri.to_owned(),
            source,
        })?
        .bytes()
        .await
        .map_err(|source| StoreError::Store {
            uri: uri.to_owned(),
            source,
        })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(StoreError::Checksum {
            uri: uri.to_owned(),
            expected: expected_sha256.to_owned(),
            actual,
        });
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as Key};

    #[test]
    fn s3_keys_come_from_secret_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("id"), "minio-user\n").unwrap();
        std::fs::write(dir.join("key"), "minio-secret\n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let vars = |id: &str, key: &str| {
            let (id, key) = (dir.join(id), dir.join(key));
            move |name: &str| match name {
                "AWS_ACCESS_KEY_ID_FILE" => Some(id.clone().into_os_string()),
                "AWS_SECRET_ACCESS_KEY_FILE" => Some(key.clone().into_os_string()),
                _ => None,
            }
        };
        let builder = with_credential_files(AmazonS3Builder::new(), vars("id", "key")).unwrap();
        assert_eq!(
            builder.get_config_value(&Key::AccessKeyId).as_deref(),
            Some("minio-user")
        );
        assert_eq!(
            builder.get_config_value(&Key::SecretAccessKey).as_deref(),
            Some("minio-secret")
        );
        let missing = with_credential_files(AmazonS3Builder::new(), vars("id", "nope"))
            .err()
            .unwrap();
        assert!(missing.contains("AWS_SECRET_ACCESS_KEY_FILE"), "{missing}");
        let empty = with_credential_files(AmazonS3Builder::new(), vars("empty", "key"))
            .err()
            .unwrap();
        assert!(empty.contains("is empty"), "{empty}");
        // Unset: the builder is left as the plain variables made it.
        let plain = with_credential_files(AmazonS3Builder::new(), |_| None).unwrap();
        assert_eq!(plain.get_config_value(&Key::SecretAccessKey), None);
    }
}
