//! The per-broker lane that puts Produce requests on the wire in the order
//! the produce stage made them: I/O, kept apart from the decisions.
//!
//! Spawning a task per request would let the runtime reorder them on the
//! wire, and a partition's sequences would arrive out of order. One task per
//! broker queues each request on the connection before taking the next, and
//! only the waits for the answers run concurrently.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::event::Event;
use super::produce::{NoAnswer, ProduceJob, ProduceReply};
use crate::cluster::{Cluster, Role};
use crate::observe::metrics::{requests, Api};

/// Queues one broker's Produce requests in order.
#[derive(Debug)]
pub(super) struct ProduceLane {
    jobs: mpsc::UnboundedSender<ProduceJob>,
}

impl ProduceLane {
    /// Starts a lane; the answers to its requests arrive on `events`.
    pub(super) fn start(target: Arc<Cluster>, events: mpsc::UnboundedSender<Event>) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<ProduceJob>();
        let lane = async move {
            while let Some(job) = queue.recv().await {
                let ProduceJob {
                    broker,
                    request,
                    splices,
                    sent,
                    lease,
                } = job;
                let answer = move |result| {
                    Event::ProduceAnswered(ProduceReply {
                        broker,
                        sent,
                        result,
                    })
                };
                // Checked here, last thing before the wire: the process may
                // have stalled since the engine made the request.
                if !lease.holds() {
                    let _ = events.send(answer(Err(NoAnswer::LeaseEnded)));
                    continue;
                }
                let sent_at = Instant::now();
                match target.enqueue_spliced(broker, request, splices).await {
                    Ok(pending) => {
                        let (target, events) = (target.clone(), events.clone());
                        let waiting = async move {
                            let result = pending.response().await.map_err(|e| target.net_error(e));
                            let elapsed = sent_at.elapsed();
                            requests().completed(Role::Target, broker, Api::Produce, elapsed);
                            let _ = events.send(answer(result.map_err(NoAnswer::Failed)));
                        };
                        tokio::spawn(waiting.in_current_span());
                    }
                    Err(e) => {
                        let _ = events.send(answer(Err(NoAnswer::Failed(e))));
                    }
                }
            }
        };
        // In the flow's span (the engine starts its lanes), as its own events are.
        tokio::spawn(lane.in_current_span());
        ProduceLane { jobs }
    }

    /// Queues a request; its answer arrives as an [`Event::ProduceAnswered`].
    pub(super) fn submit(&self, job: ProduceJob) {
        // The lane task lives as long as this sender: the send cannot fail.
        let _ = self.jobs.send(job);
    }
}
