//! A one-shot channel whose receiving end is a future: how a buffer-mapping callback hands its
//! result to [`crate::gpu::Gpu::read_async`], natively and in a browser page alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// The sending end: [`Sender::send`] once, or drop it to close the channel.
pub struct Sender<T>(Arc<Mutex<Slot<T>>>);

/// The receiving end: a future of the value sent, or `None` if the sender was dropped first.
pub struct Receiver<T>(Arc<Mutex<Slot<T>>>);

pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        closed: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        self.0.lock().unwrap().value = Some(value);
        // Dropping `self` closes the channel and wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut slot = self.0.lock().unwrap();
        slot.closed = true;
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.lock().unwrap();
        if let Some(v) = slot.value.take() {
            Poll::Ready(Some(v))
        } else if slot.closed {
            Poll::Ready(None)
        } else {
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sent_before_or_after_the_first_poll_arrives() {
        let (tx, rx) = oneshot();
        tx.send(7);
        assert_eq!(pollster::block_on(rx), Some(7));
        let (tx, rx) = oneshot();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(8);
        });
        assert_eq!(pollster::block_on(rx), Some(8));
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_sender_ends_the_wait_with_none() {
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(pollster::block_on(rx), None);
    }
}
