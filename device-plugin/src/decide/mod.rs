//! CORE: every pure decision of the node agent, one module each. Nothing here does I/O or reads a
//! clock (inputs arrive as values, time as an argument); `tests/scripts/check-core-purity.sh`
//! enforces that for every file under a `decide/` directory.
//!
//! Which limits does a pod get, and why? [`inputs`] turns cached objects and kubelet grants into
//! facts and settles invalid quotas; the shared rules in `kube_dmem_crds::select` pick the
//! governing quota and `kube_dmem_crds::limits` the limits; [`limits`] turns them into writes;
//! [`outcome`] whether a round may write them at all (bad input never loosens a limit);
//! [`ancestors`] gives the cgroups above the pods the protection emulated `high` needs;
//! [`foreign`] what to do when another writer changed a pod's dmem files;
//! [`pressure`] says how close each pod is to losing VRAM; [`conditions`] what its pod
//! conditions say; [`backoff`] when a failed API write is retried.

pub mod ancestors;
pub mod backoff;
pub mod conditions;
pub mod foreign;
pub mod inputs;
pub mod limits;
pub mod outcome;
pub mod pressure;
