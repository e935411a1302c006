//! EDGE: the loop that feeds one Kubernetes watch into its reflector store, the same in both
//! binaries: errors are logged and counted under `watch_errors{resource}`, the watcher retries with
//! kube's default backoff while the store keeps its last contents, and every change after the
//! initial list pokes `trigger` (the caller debounces).

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Watch errors by resource, the `watch_errors` metric of both binaries.
pub type WatchErrors = Family<Vec<(&'static str, &'static str)>, Counter>;

/// What every watch of a binary shares: its error counter, its change trigger and its stop.
#[derive(Clone, Debug)]
pub struct WatchContext {
    /// Counts errors under `resource`.
    pub errors: WatchErrors,
    /// Poked on every change after the initial list.
    pub trigger: Arc<Notify>,
    /// Ends the loop.
    pub stop: CancellationToken,
}

/// Feeds `stream` (a watcher of `resource`) into `writer` until `ctx.stop`.
pub async fn drive<K, S>(resource: &'static str, stream: S, writer: Writer<K>, ctx: WatchContext)
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let events = stream.default_backoff().reflect(writer);
    futures::pin_mut!(events);
    loop {
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => break,
            next = events.next() => match next {
                // Initial list items arrive before the store is swapped in; poke once at InitDone.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => ctx.trigger.notify_one(),
                Some(Err(err)) => {
                    ctx.errors.get_or_create(&vec![("resource", resource)]).inc();
                    tracing::warn!(resource, error = &err as &dyn std::error::Error, "Watch failed, retrying");
                }
                None => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    use super::*;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    #[tokio::test]
    async fn changes_poke_the_trigger_and_errors_are_counted() {
        let (store, writer) = reflector::store::<ConfigMap>();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let ctx = WatchContext {
            errors: WatchErrors::default(),
            trigger: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
        };
        let task = tokio::spawn(drive("configmaps", rx, writer, ctx.clone()));
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(cm("a")),
            watcher::Event::InitDone,
        ] {
            tx.unbounded_send(Ok(event)).expect("send");
        }
        ctx.trigger.notified().await;
        assert_eq!(store.state().len(), 1);
        tx.unbounded_send(Err(watcher::Error::NoResourceVersion))
            .expect("send");
        tx.unbounded_send(Ok(watcher::Event::Apply(cm("b"))))
            .expect("send");
        ctx.trigger.notified().await;
        assert_eq!(store.state().len(), 2);
        assert_eq!(
            ctx.errors
                .get_or_create(&vec![("resource", "configmaps")])
                .get(),
            1
        );
        ctx.stop.cancel();
        task.await.expect("loop ends on stop");
    }
}
