//! Each job's event channel: a broadcast for live subscribers plus a bounded history so a
//! subscriber that connects late first receives every earlier event exactly once. Events carry a
//! sequence number; a subscriber that falls behind the broadcast buffer catches up from the
//! history instead of losing events. Nothing here is persisted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::pipeline::ScanEvent;

/// One published event, serialized once and shared by every subscriber.
#[derive(Debug)]
pub struct StreamEvent {
    pub seq: u64,
    pub droppable: bool,
    pub terminal: bool,
    /// The JSON text frame: the event's fields plus `type` and `timestamp`.
    pub json: Arc<str>,
}

/// Serializes an event with its `timestamp` (Unix seconds).
pub fn event_json(event: &ScanEvent, timestamp: f64) -> String {
    let mut value = serde_json::to_value(event).expect("events serialize");
    if let Some(obj) = value.as_object_mut() {
        obj.insert("timestamp".into(), serde_json::json!(timestamp));
    }
    value.to_string()
}

struct ChannelState {
    history: VecDeque<Arc<StreamEvent>>,
    next_seq: u64,
    finished: bool,
}

/// The event channel of one job.
pub struct JobChannel {
    state: Mutex<ChannelState>,
    tx: broadcast::Sender<Arc<StreamEvent>>,
    history_limit: usize,
    metrics: Metrics,
}

impl JobChannel {
    fn new(history_limit: usize, metrics: Metrics) -> JobChannel {
        let (tx, _) = broadcast::channel(1024);
        JobChannel {
            state: Mutex::new(ChannelState {
                history: VecDeque::new(),
                next_seq: 1,
                finished: false,
            }),
            tx,
            history_limit,
            metrics,
        }
    }

    /// Appends to the history and sends to live subscribers, under one lock so that a
    /// concurrent subscribe sees each event either in its replay or live, never both or neither.
    /// Events published after the terminal event are ignored (`None`): a stopped pipeline that
    /// is still winding down must not extend a finished stream.
    pub fn publish(&self, event: &ScanEvent) -> Option<Arc<StreamEvent>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.finished {
            return None;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let published = Arc::new(StreamEvent {
            seq: state.next_seq,
            droppable: event.is_droppable(),
            terminal: event.is_terminal(),
            json: event_json(event, timestamp).into(),
        });
        state.next_seq += 1;
        state.finished |= published.terminal;
        state.history.push_back(published.clone());
        if state.history.len() > self.history_limit {
            // Drop the oldest log line; phases and the terminal event are never dropped.
            if let Some(pos) = state.history.iter().position(|e| e.droppable) {
                state.history.remove(pos);
                self.metrics.streams.events_dropped.inc();
            }
        }
        let _ = self.tx.send(published.clone());
        Some(published)
    }

    /// Whether the terminal event was published.
    pub fn is_finished(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finished
    }

    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        Subscription {
            replay: state.history.iter().cloned().collect(),
            rx,
            last_seq: 0,
            channel: self.clone(),
        }
    }
}

/// A subscriber's view: the replay of history, then live events, each exactly once and in order.
pub struct Subscription {
    replay: VecDeque<Arc<StreamEvent>>,
    rx: broadcast::Receiver<Arc<StreamEvent>>,
    last_seq: u64,
    channel: Arc<JobChannel>,
}

impl Subscription {
    /// The next event, or `None` once the channel is gone.
    pub async fn next(&mut self) -> Option<Arc<StreamEvent>> {
        loop {
            if let Some(event) = self.replay.pop_front() {
                if event.seq > self.last_seq {
                    self.last_seq = event.seq;
                    return Some(event);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(event) => {
                    if event.seq > self.last_seq {
                        self.last_seq = event.seq;
                        return Some(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Catch up from the history (which still holds everything but old log lines).
                    let state = self.channel.state.lock().unwrap_or_else(|p| p.into_inner());
                    self.replay = state
                        .history
                        .iter()
                        .filter(|e| e.seq > self.last_seq)
                        .cloned()
                        .collect();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// All live channels, plus the most recently finished ones for late subscribers.
pub struct EventHub {
    channels: Mutex<HashMap<String, Arc<JobChannel>>>,
    finished: Mutex<VecDeque<String>>,
    history_limit: usize,
    keep_finished: usize,
    metrics: Metrics,
}

impl EventHub {
    pub fn new(history_limit: usize, keep_finished: usize, metrics: Metrics) -> EventHub {
        EventHub {
            channels: Mutex::new(HashMap::new()),
            finished: Mutex::new(VecDeque::new()),
            history_limit,
            keep_finished,
            metrics,
        }
    }

    /// The channel of a job, created on first use.
    pub fn channel(&self, test_id: &str) -> Arc<JobChannel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(test_id.to_string())
            .or_insert_with(|| Arc::new(JobChannel::new(self.history_limit, self.metrics.clone())))
            .clone()
    }

    /// The channel of a job if one exists.
    pub fn existing(&self, test_id: &str) -> Option<Arc<JobChannel>> {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(test_id)
            .cloned()
    }

    /// Marks a job's channel finished; only the most recent finished channels are kept in memory
    /// (older histories are replayed from the bundle's `stream.jsonl`).
    pub fn finish(&self, test_id: &str) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.push_back(test_id.to_string());
        while finished.len() > self.keep_finished {
            if let Some(old) = finished.pop_front() {
                self.channels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&old);
            }
        }
    }

    /// Drops a channel that will never be used (a job restarting from the queue starts afresh).
    pub fn remove(&self, test_id: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(test_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> ScanEvent {
        ScanEvent::Log {
            tool: "t".into(),
            stream: "stdout".into(),
            line: format!("line {n}"),
        }
    }

    fn phase() -> ScanEvent {
        ScanEvent::Phase {
            phase: "clone".into(),
            message: "m".into(),
            commit: None,
            branch: None,
        }
    }

    #[tokio::test]
    async fn late_subscribers_get_history_then_live_events_once() {
        let hub = EventHub::new(100, 4, Metrics::new(&[], &[]));
        let ch = hub.channel("a");
        ch.publish(&phase());
        ch.publish(&log(1));
        let mut sub = ch.subscribe();
        ch.publish(&log(2));
        let seqs: Vec<u64> = [sub.next().await, sub.next().await, sub.next().await]
            .into_iter()
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn history_drops_log_lines_but_keeps_phases() {
        let metrics = Metrics::new(&[], &[]);
        let hub = EventHub::new(16, 4, metrics.clone());
        let ch = hub.channel("a");
        ch.publish(&phase());
        for i in 0..100 {
            ch.publish(&log(i));
        }
        let mut sub = ch.subscribe();
        let first = sub.next().await.unwrap();
        assert_eq!(first.seq, 1, "the phase event survives");
        assert_eq!(metrics.streams.events_dropped.get(), 100 + 1 - 16);
    }

    #[tokio::test]
    async fn lagging_subscribers_catch_up_from_history() {
        let hub = EventHub::new(10_000, 4, Metrics::new(&[], &[]));
        let ch = hub.channel("a");
        let mut sub = ch.subscribe();
        for i in 0..3000 {
            ch.publish(&log(i));
        }
        for expected in 1..=3000u64 {
            assert_eq!(sub.next().await.unwrap().seq, expected);
        }
    }

    #[test]
    fn only_recent_finished_channels_are_kept() {
        let hub = EventHub::new(16, 2, Metrics::new(&[], &[]));
        for id in ["a", "b", "c"] {
            hub.channel(id);
            hub.finish(id);
        }
        assert!(hub.existing("a").is_none());
        assert!(hub.existing("c").is_some());
    }
}
