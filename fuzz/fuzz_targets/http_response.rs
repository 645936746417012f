//! `lb_userspace::health::probe::read_response`, the HTTP health check's reader of a backend's
//! response, on any bytes: it never panics, its verdict agrees with the check's own rules, and
//! it is the same whether the bytes arrive at once or in small pieces (TCP cuts them anywhere).
//!
//! Input: 3 bytes, then the response.
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | the size of the pieces of the second read-through (`% 64 + 1`) |
//! | 1 | accepted statuses: `% 4` picks any 2xx, 200, 200-399 or 404 and 500-599 |
//! | 2 | expected body text: `% 4` picks none, "ok", "" or "healthy" |
#![no_main]

use std::{
    future::Future,
    io,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use lb_userspace::health::{
    probe::{read_response, HttpCheck},
    state::Reason,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands out `bytes` at most `piece` bytes a read, never waiting.
struct Pieces<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.piece.min(self.bytes.len()).min(buf.remaining());
        buf.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Poll::Ready(Ok(()))
    }
}

/// Runs the reader to its end: with a stream that never waits it finishes in one poll.
fn verdict(bytes: &[u8], piece: usize, check: &HttpCheck) -> Result<(), Reason> {
    let mut future = pin!(read_response(Pieces { bytes, piece }, check));
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(verdict) => verdict,
        Poll::Pending => panic!("the reader waited on a stream that never waits"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((control, response)) = data.split_at_checked(3) else { return };
    let mut check = HttpCheck::new("/health");
    check.expect_status = match control[1] % 4 {
        0 => vec![],
        1 => vec![(200, 200)],
        2 => vec![(200, 399)],
        _ => vec![(404, 404), (500, 599)],
    };
    check.expect_body = [None, Some("ok"), Some(""), Some("healthy")][usize::from(control[2] % 4)].map(String::from);

    let whole = verdict(response, usize::MAX, &check);
    let piecewise = verdict(response, usize::from(control[0] % 64) + 1, &check);
    assert_eq!(whole, piecewise, "the verdict depends on how the response was cut into reads");
    match &whole {
        Ok(()) => assert!(response.starts_with(b"HTTP/"), "passed without a status line"),
        Err(Reason::HttpStatus(status)) => assert!((100..=599).contains(status) && !check.accepts(*status)),
        Err(Reason::BodyMissing(text)) => assert_eq!(Some(text), check.expect_body.as_ref()),
        Err(Reason::BadHttp(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("a reader of bytes failed with {other:?}"),
    }
});
