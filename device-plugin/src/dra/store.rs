//! EDGE: the claims prepared on this node, in memory and in a checkpoint file. The kubelet
//! prepares a claim once and unprepares it once; between the two the agent may restart, and its
//! limits must survive that: the kernel keeps the values, and the checkpoint keeps why (which pod
//! holds how much of which region), so a restarted agent enforces the same grants instead of
//! seeing pods that nothing governs. The file is replaced atomically (write, fsync, rename); a
//! change that cannot be saved is refused, so memory never claims more than the file holds.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use kube_dmem_crds::select::Grant;

use super::decide::claims::{Prepared, grants_by_pod};

/// File version, so a later layout can be told apart.
const CHECKPOINT_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    version: u32,
    claims: Vec<Prepared>,
}

/// Why the store could not load or save.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The checkpoint could not be read.
    #[error("read claim checkpoint {path}")]
    ReadCheckpoint {
        /// File.
        path: PathBuf,
        /// I/O failure.
        #[source]
        source: io::Error,
    },
    /// The checkpoint is not ours or is corrupt.
    #[error("parse claim checkpoint {path}")]
    ParseCheckpoint {
        /// File.
        path: PathBuf,
        /// Parse failure.
        #[source]
        source: serde_json::Error,
    },
    /// The checkpoint has a version this agent does not know.
    #[error(
        "claim checkpoint {path} has version {version}, this agent writes {CHECKPOINT_VERSION}"
    )]
    CheckpointVersion {
        /// File.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// The checkpoint could not be written.
    #[error("write claim checkpoint {path}")]
    WriteCheckpoint {
        /// File.
        path: PathBuf,
        /// I/O failure.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReadCheckpoint { .. } => "ReadCheckpoint",
            Self::ParseCheckpoint { .. } => "ParseCheckpoint",
            Self::CheckpointVersion { .. } => "CheckpointVersion",
            Self::WriteCheckpoint { .. } => "WriteCheckpoint",
        }
    }
}

/// Prepared claims by claim UID, saved to `path` on every change (memory only without a path).
#[derive(Debug, Default)]
pub struct ClaimStore {
    path: Option<PathBuf>,
    claims: Mutex<BTreeMap<String, Prepared>>,
}

impl ClaimStore {
    /// A store kept in memory only (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The store saved at `path`, loaded from it when the file exists. A file that cannot be read
    /// is an error: starting empty would drop the limits of running pods.
    pub fn open(path: PathBuf) -> Result<Self, StoreError> {
        let claims = match std::fs::read(&path) {
            Ok(bytes) => {
                let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|source| {
                    StoreError::ParseCheckpoint {
                        path: path.clone(),
                        source,
                    }
                })?;
                if cp.version != CHECKPOINT_VERSION {
                    return Err(StoreError::CheckpointVersion {
                        path,
                        version: cp.version,
                    });
                }
                cp.claims
                    .into_iter()
                    .map(|c| (c.claim.uid.clone(), c))
                    .collect()
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::ReadCheckpoint { path, source }),
        };
        Ok(Self {
            path: Some(path),
            claims: Mutex::new(claims),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Prepared>> {
        // A panic while holding the lock leaves a consistent map (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The prepared claim with UID `uid`.
    pub fn get(&self, uid: &str) -> Option<Prepared> {
        self.lock().get(uid).cloned()
    }

    /// Records `prepared` (replacing an earlier record of the same claim) and saves.
    pub fn insert(&self, prepared: Prepared) -> Result<(), StoreError> {
        let mut claims = self.lock();
        let mut next = claims.clone();
        next.insert(prepared.claim.uid.clone(), prepared);
        self.save(&next)?;
        *claims = next;
        Ok(())
    }

    /// Forgets the claim with UID `uid` and saves; returns what it held.
    pub fn remove(&self, uid: &str) -> Result<Option<Prepared>, StoreError> {
        let mut claims = self.lock();
        if !claims.contains_key(uid) {
            return Ok(None);
        }
        let mut next = claims.clone();
        let removed = next.remove(uid);
        self.save(&next)?;
        *claims = next;
        Ok(removed)
    }

    /// Every pod's grants from the prepared claims (per region, summed over its claims).
    pub fn grants_by_pod(&self) -> BTreeMap<String, Vec<Grant>> {
        grants_by_pod(self.lock().values())
    }

    /// How many claims are prepared.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no claim is prepared.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn save(&self, claims: &BTreeMap<String, Prepared>) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            claims: claims.values().cloned().collect(),
        };
        let write = |path: &Path| -> io::Result<()> {
            let bytes = serde_json::to_vec(&checkpoint).map_err(io::Error::other)?;
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write(path).map_err(|source| StoreError::WriteCheckpoint {
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dra::decide::claims::{ClaimRef, PreparedDevice};

    fn prepared(uid: &str, pod: &str, bytes: u64) -> Prepared {
        Prepared {
            claim: ClaimRef {
                namespace: "ns".into(),
                name: format!("claim-{uid}"),
                uid: uid.into(),
            },
            pool: "node".into(),
            pods: vec![pod.into()],
            devices: vec![PreparedDevice {
                requests: vec!["vram".into()],
                device: "r0".into(),
                region: "r0".into(),
                bytes,
                share_id: None,
            }],
        }
    }

    #[test]
    fn survives_a_reopen_and_refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoint.json");
        let store = ClaimStore::open(path.clone()).expect("open empty");
        store.insert(prepared("c1", "p1", 4)).expect("insert");
        store.insert(prepared("c2", "p1", 2)).expect("insert");
        let reopened = ClaimStore::open(path.clone()).expect("reopen");
        assert_eq!(reopened.grants_by_pod()["p1"][0].bytes, 6);
        assert_eq!(
            reopened.remove("c1").expect("remove").map(|p| p.claim.uid),
            Some("c1".into())
        );
        assert_eq!(ClaimStore::open(path.clone()).expect("reopen").len(), 1);
        std::fs::write(&path, b"{not json").expect("write");
        let err = ClaimStore::open(path).expect_err("corrupt");
        assert_eq!(err.reason(), "ParseCheckpoint");
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_not_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing-dir").join("checkpoint.json");
        let store = ClaimStore::open(path).expect("open: a missing file is empty");
        let err = store
            .insert(prepared("c1", "p1", 4))
            .expect_err("no directory");
        assert_eq!(err.reason(), "WriteCheckpoint");
        assert!(store.is_empty());
    }
}
