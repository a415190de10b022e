//! Group commit: concurrent writers hand their items to one task, which takes every item waiting
//! when it is free and writes them in one transaction, then answers each writer with its share
//! of the result (or each with the error: all of a group is stored, or none of it). Under load a
//! commit is shared by many writers; alone, a writer waits for no timer. The task runs apart from
//! the writers, so a writer that goes away (its client disconnected) cannot leave the other
//! members of its group unanswered.

use std::future::Future;

use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot};

/// Writers waiting for the task; further writers wait to hand their items in.
const WAITING_WRITERS: usize = 1024;

type Answer<R> = anyhow::Result<Vec<R>>;

/// One writer waiting for its group: its items and where its answer goes.
struct Member<T, R> {
    items: Vec<T>,
    reply: oneshot::Sender<Answer<R>>,
}

/// The handle of a group-commit task: items handed in through it are committed in groups.
pub struct GroupCommit<T, R> {
    members: mpsc::Sender<Member<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the task on the current runtime: each group of at most `max_items` items (a larger
    /// hand-in is a group of its own) goes to `commit`, which answers one result per item, in
    /// order. The task ends when this handle is dropped.
    pub fn start<F, Fut>(max_items: usize, commit: F) -> GroupCommit<T, R>
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Answer<R>> + Send + 'static,
    {
        let (members, waiting) = mpsc::channel(WAITING_WRITERS);
        tokio::spawn(run_groups(waiting, max_items, commit));
        GroupCommit { members }
    }

    /// Hands `items` in and waits for the commit of their group: one result per item, in order.
    pub async fn write(&self, items: Vec<T>) -> Answer<R> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            anyhow!("the group-commit task stopped, so nothing was written; restart the service")
        };
        self.members
            .send(Member { items, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The committer loop: takes the first waiting member, adds every member already waiting (up to
/// `max_items` items; one larger member is a group of its own), commits the group and answers
/// each member; until every sender is gone.
async fn run_groups<T, R, F, Fut>(
    mut waiting: mpsc::Receiver<Member<T, R>>,
    max_items: usize,
    mut commit: F,
) where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Answer<R>>,
{
    let mut carried: Option<Member<T, R>> = None;
    loop {
        let first = match carried.take() {
            Some(member) => member,
            None => match waiting.recv().await {
                Some(member) => member,
                None => return,
            },
        };
        let mut size = first.items.len();
        let mut group = vec![first];
        // Everything that arrived while the previous group committed joins this one.
        while size < max_items {
            let Ok(member) = waiting.try_recv() else {
                break;
            };
            if size + member.items.len() > max_items {
                carried = Some(member);
                break;
            }
            size += member.items.len();
            group.push(member);
        }
        let mut items = Vec::with_capacity(size);
        let mut replies = Vec::with_capacity(group.len());
        for member in group {
            replies.push((member.items.len(), member.reply));
            items.extend(member.items);
        }
        answer(replies, commit(items).await);
    }
}

/// Gives each member its share of the group's decisions, in order, or the group's error.
fn answer<R>(replies: Vec<(usize, oneshot::Sender<Answer<R>>)>, result: Answer<R>) {
    match result {
        Ok(decisions) => {
            let mut decisions = decisions.into_iter();
            for (n, reply) in replies {
                let _ = reply.send(Ok(decisions.by_ref().take(n).collect()));
            }
        }
        Err(err) => {
            tracing::error!(error = ?err, writers = replies.len(), "a group commit failed; each of its writers is answered with the error and none of the group was stored");
            for (_, reply) in replies {
                let _ = reply.send(Err(copy_of(&err).context(
                    "the store could not commit this write with its group, so nothing of it was stored; retry it",
                )));
            }
        }
    }
}

/// The group's error for one member: its text, and a full disk kept recognisable (answered
/// `507`, see `crate::error::is_disk_full`).
fn copy_of(err: &anyhow::Error) -> anyhow::Error {
    let text = format!("{err:#}");
    if crate::error::is_disk_full(err) {
        anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::StorageFull, text))
    } else {
        anyhow!(text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    use super::*;

    type Reply = oneshot::Receiver<Answer<u32>>;

    async fn send(to: &mpsc::Sender<Member<u32, u32>>, items: Vec<u32>) -> Reply {
        let (reply, answer) = oneshot::channel();
        to.send(Member { items, reply }).await.unwrap();
        answer
    }

    /// A committer loop that records each group, holds the first one until `open` is sent,
    /// and fails a group holding the item 13 (as a failed transaction would).
    struct Harness {
        to: mpsc::Sender<Member<u32, u32>>,
        groups: Arc<Mutex<Vec<Vec<u32>>>>,
        open: oneshot::Sender<()>,
        first_started: Arc<Notify>,
    }

    fn start(max_items: usize) -> Harness {
        let (to, waiting) = mpsc::channel(64);
        let groups = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = oneshot::channel::<()>();
        let first_started = Arc::new(Notify::new());
        let (seen, started) = (groups.clone(), first_started.clone());
        tokio::spawn(async move {
            let gate = Mutex::new(Some(gate));
            run_groups(waiting, max_items, |items: Vec<u32>| {
                seen.lock().unwrap().push(items.clone());
                let gate = gate.lock().unwrap().take();
                let started = started.clone();
                async move {
                    if let Some(gate) = gate {
                        started.notify_one();
                        let _ = gate.await;
                    }
                    if items.contains(&13) {
                        anyhow::bail!("the group's transaction failed");
                    }
                    Ok(items.iter().map(|i| i * 10).collect())
                }
            })
            .await
        });
        Harness {
            to,
            groups,
            open,
            first_started,
        }
    }

    #[tokio::test]
    async fn members_waiting_during_a_commit_share_the_next_group_and_each_gets_its_answer() {
        let Harness {
            to,
            groups,
            open,
            first_started,
        } = start(100);
        let a = send(&to, vec![1]).await;
        first_started.notified().await;
        // While the first group commits, three submissions (one a batch of two) wait.
        let b = send(&to, vec![2, 3]).await;
        let c = send(&to, vec![4]).await;
        let d = send(&to, vec![5]).await;
        open.send(()).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), vec![10]);
        assert_eq!(b.await.unwrap().unwrap(), vec![20, 30]);
        assert_eq!(c.await.unwrap().unwrap(), vec![40]);
        assert_eq!(d.await.unwrap().unwrap(), vec![50]);
        assert_eq!(
            *groups.lock().unwrap(),
            vec![vec![1], vec![2, 3, 4, 5]],
            "one commit for the first submission, one for all that waited"
        );
    }

    #[tokio::test]
    async fn a_failed_group_answers_every_member_with_the_error() {
        let Harness {
            to,
            groups,
            open,
            first_started,
        } = start(100);
        let a = send(&to, vec![1]).await;
        first_started.notified().await;
        let b = send(&to, vec![2]).await;
        let poisoned = send(&to, vec![13]).await;
        let c = send(&to, vec![3, 4]).await;
        open.send(()).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), vec![10]);
        for answer in [b, poisoned, c] {
            let err = answer
                .await
                .unwrap()
                .expect_err("a member of the failed group");
            let text = format!("{err:#}");
            assert!(
                text.contains("nothing of it was stored; retry it"),
                "{text}"
            );
            assert!(text.contains("the group's transaction failed"), "{text}");
        }
        assert_eq!(*groups.lock().unwrap(), vec![vec![1], vec![2, 13, 3, 4]]);
        // The committer goes on after a failed group.
        assert_eq!(send(&to, vec![6]).await.await.unwrap().unwrap(), vec![60]);
    }

    #[tokio::test]
    async fn a_group_stops_at_its_size_limit_and_the_next_member_starts_the_next_group() {
        let Harness {
            to,
            groups,
            open,
            first_started,
        } = start(3);
        let a = send(&to, vec![1]).await;
        first_started.notified().await;
        let b = send(&to, vec![2, 3]).await;
        let c = send(&to, vec![4, 5]).await;
        let big = send(&to, vec![6, 7, 8, 9]).await;
        open.send(()).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), vec![10]);
        assert_eq!(b.await.unwrap().unwrap(), vec![20, 30]);
        assert_eq!(c.await.unwrap().unwrap(), vec![40, 50]);
        assert_eq!(big.await.unwrap().unwrap(), vec![60, 70, 80, 90]);
        assert_eq!(
            *groups.lock().unwrap(),
            vec![vec![1], vec![2, 3], vec![4, 5], vec![6, 7, 8, 9]]
        );
    }
}
