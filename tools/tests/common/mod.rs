//! What zbmd-tools' integration tests share.

use std::path::PathBuf;

/// A fresh folder for one test, removed when dropped (pass or fail).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `zbmd-tools-<test>-<pid>` in the temp folder, emptied first.
    pub fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("zbmd-tools-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test's temp folder");
        TempDir(path)
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A safetensors file's tensors, sorted by name: name, dtype, shape, bytes.
pub type Tensors = Vec<(String, String, Vec<usize>, Vec<u8>)>;

/// Every tensor of a safetensors file's bytes; `None` when they are not one.
pub fn tensors(bytes: &[u8]) -> Option<Tensors> {
    let file = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let mut out: Tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (name, format!("{:?}", view.dtype()), view.shape().to_vec(), view.data().to_vec())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}
