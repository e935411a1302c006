//! EDGE: pods rounds waiting for the kernel. A pod whose container is held (a runtime or kubelet
//! hook) or whose cgroup just appeared must not wait for a node round that holds the kernel for
//! every pod (about 130 ms through FUSE at 110 pods, more under TCG). Its round is queued here; the
//! node round runs it between two of its pods ([`Between`], a [`GiveWay`]), or, when no node round
//! runs, the task that queued it runs it itself once it holds the kernel. Whoever takes a job
//! answers it, so every job queued before the kernel's lock is next taken is answered.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Pod;
use kube_dmem_crds::select::{PodFacts, QuotaFacts};
use tokio::sync::oneshot;

use super::backend::BackendError;
use crate::cgroup::CgroupFs;
use crate::round::{
    BadInputs, GaveWay, GiveWay, Memory, RoundConfig, RoundInputs, RoundReport, settle_between,
};

/// One pods round to run, with where its report goes.
pub struct SettleJob {
    /// Every pod of the node (the simulator's kubelet makes the cgroups of these).
    pub pods: Vec<Arc<Pod>>,
    /// The pods to settle.
    pub facts: Vec<PodFacts>,
    /// The quotas in force (last valid specs included).
    pub quotas: Vec<QuotaFacts>,
    /// Inputs the round must not take as given.
    pub invalid: BadInputs,
    /// The round's report, or why it failed.
    pub reply: oneshot::Sender<Result<RoundReport, BackendError>>,
}

impl SettleJob {
    /// What its round decides from.
    pub fn inputs(&self) -> RoundInputs<'_> {
        RoundInputs::new(&self.facts, &self.quotas, &self.invalid)
    }
}

/// The queue of pods rounds waiting for the kernel.
#[derive(Default)]
pub struct Waiting {
    jobs: Mutex<Vec<SettleJob>>,
}

impl Waiting {
    /// Queues `job`.
    pub fn push(&self, job: SettleJob) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(job);
    }

    /// Every job queued now, oldest first; the queue is left empty.
    pub fn take(&self) -> Vec<SettleJob> {
        // A panic elsewhere cannot leave the list half-changed: push and take are one call each.
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answers every queued job with `error()` (the kernel's lock is poisoned: no round can run).
    pub fn fail_all(&self, error: impl Fn() -> BackendError) {
        for job in self.take() {
            let _ = job.reply.send(Err(error()));
        }
    }
}

/// The node round's side: between two of its pods it runs what waits, on its own kernel handle
/// and memory.
pub struct Between<'a> {
    /// The queue.
    pub waiting: &'a Waiting,
    /// The node round's settings (the same for every round).
    pub cfg: &'a RoundConfig,
}

impl GiveWay for Between<'_> {
    fn between_pods(&mut self, fs: &dyn CgroupFs, memory: &mut Memory) -> GaveWay {
        let mut gave_way = GaveWay::default();
        for job in self.waiting.take() {
            let result = settle_between(fs, self.cfg, job.inputs(), memory);
            match result {
                Ok((report, settled)) => {
                    gave_way.absorb(settled);
                    let _ = job.reply.send(Ok(report));
                }
                Err(err) => {
                    let _ = job.reply.send(Err(BackendError::Round(err)));
                }
            }
        }
        gave_way
    }
}

#[cfg(test)]
mod tests {
    use kube_dmem_crds::limits::HighSupport;
    use kube_dmem_sim::{Profile, SimConfig, SimKernel};

    use super::*;
    use crate::cgroup::dmem::read_values;
    use crate::cgroup::format::DmemValue;
    use crate::cgroup::sim_backend::SimCgroups;
    use crate::cgroup::{CgroupFile, CgroupPath};
    use crate::decide::pressure::PressureThresholds;
    use crate::round::LimitsOutcome;

    const R0: &str = "drm/0000:03:00.0/vram0";
    const UID: &str = "0b5a4e2f-3c1d-4e5f-8a9b-0c1d2e3f4a5b";
    const POD: &str = "/kubepods/besteffort/pod0b5a4e2f-3c1d-4e5f-8a9b-0c1d2e3f4a5b";

    fn job(
        max: u64,
    ) -> (
        SettleJob,
        oneshot::Receiver<Result<RoundReport, BackendError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let quota: kube_dmem_crds::DmemQuota = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
            "metadata": {"name": "q", "namespace": "ml"},
            "spec": {"selector": {}, "limits": [{"region": R0, "max": max.to_string()}]}
        }))
        .expect("quota");
        let quota = QuotaFacts::from_quota(&quota).expect("valid quota");
        let facts = PodFacts {
            namespace: "ml".into(),
            name: "train-0".into(),
            uid: UID.into(),
            labels: Default::default(),
            grants: Vec::new(),
        };
        let job = SettleJob {
            pods: Vec::new(),
            facts: vec![facts],
            quotas: vec![quota],
            invalid: BadInputs::default(),
            reply,
        };
        (job, answer)
    }

    #[test]
    fn a_node_round_runs_what_waits_and_answers_it() {
        let mut kernel = SimKernel::new(SimConfig::with_profile(Profile::Current));
        kernel.register_region(R0, 16 << 30, true);
        for dir in ["/kubepods", "/kubepods/besteffort", POD] {
            kernel.mkdir(dir).expect("mkdir");
        }
        let fs = SimCgroups::from_kernel(kernel);
        for dir in ["/", "/kubepods", "/kubepods/besteffort"] {
            let dir = CgroupPath::new(dir).expect("path");
            fs.write(&dir, CgroupFile::CgroupSubtreeControl, "+dmem")
                .expect("+dmem");
        }
        let cfg = RoundConfig {
            scan_root: CgroupPath::root(),
            high: HighSupport::Emulated,
            thresholds: PressureThresholds::default(),
        };
        let waiting = Waiting::default();
        let mut between = Between {
            waiting: &waiting,
            cfg: &cfg,
        };
        let mut memory = Memory::default();
        assert!(
            between.between_pods(&fs, &mut memory).pods.is_empty(),
            "nothing waits"
        );
        let (first, mut first_answer) = job(4 << 30);
        waiting.push(first);
        let gave_way = between.between_pods(&fs, &mut memory);
        let report = first_answer
            .try_recv()
            .expect("answered at once")
            .expect("pods round");
        assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
        let max = read_values(
            &fs,
            &CgroupPath::new(POD).expect("path"),
            CgroupFile::DmemMax,
        )
        .expect("dmem.max");
        assert_eq!(max.get(R0), Some(DmemValue::Bytes(4 << 30)));
        assert_eq!(gave_way.pods.len(), 1);
        assert_eq!(gave_way.cgroups, [CgroupPath::new(POD).expect("path")]);
        assert!(waiting.take().is_empty(), "taken once");
    }
}
