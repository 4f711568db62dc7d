//! Minting and checking a request token (HMAC-SHA256 of the id), the work
//! token checks add to `POST /rider`, `POST /driver`, `POST /rating` and each
//! id subscribed on `/communication`. With a rotated key list the check
//! tries each key; the bench's second key makes that the worst case: a
//! token signed by the last key, and a wrong token tried against both.
//!
//! Criterion gives the typical time; the bound (under 50 us at p99) is on
//! the tail, so `tail` also times 100,000 single checks, each on a fresh
//! id, and prints their percentiles.
//!
//! `cargo bench -p node --bench tokens`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use node::config::TokenKey;
use node::runtime::access::TokenKeys;
use uuid::Uuid;

/// Single checks timed by `tail`.
const TAIL_SAMPLES: usize = 100_000;

fn key(fill: char) -> TokenKey {
    TokenKey::parse(&fill.to_string().repeat(44)).expect("a long enough key")
}

fn tokens(c: &mut Criterion) {
    let single = TokenKeys::new(&[key('a')]).expect("one key");
    let rotated = TokenKeys::new(&[key('b'), key('a')]).expect("two keys");
    let id = Uuid::now_v7();
    let token = single.mint(id);
    let wrong = TokenKeys::new(&[key('c')]).expect("one key").mint(id);

    c.bench_function("mint", |b| b.iter(|| single.mint(black_box(id))));
    c.bench_function("verify", |b| {
        b.iter(|| single.verify(black_box(id), Some(black_box(&token))))
    });
    c.bench_function("verify, second of two keys", |b| {
        b.iter(|| rotated.verify(black_box(id), Some(black_box(&token))))
    });
    c.bench_function("verify, wrong token, two keys", |b| {
        b.iter(|| rotated.verify(black_box(id), Some(black_box(&wrong))))
    });
}

/// p50, p99, p99.9 and the maximum of single checks, with two keys and the
/// token signed by the second (the slowest valid case).
fn tail() {
    let rotated = TokenKeys::new(&[key('b'), key('a')]).expect("two keys");
    let signer = TokenKeys::new(&[key('a')]).expect("one key");
    let requests: Vec<_> = (0..TAIL_SAMPLES)
        .map(|_| {
            let id = Uuid::now_v7();
            (id, signer.mint(id))
        })
        .collect();
    let mut took: Vec<Duration> = requests
        .iter()
        .map(|(id, token)| {
            let started = Instant::now();
            let checked = rotated.verify(black_box(*id), Some(black_box(token)));
            let elapsed = started.elapsed();
            assert!(checked.is_ok());
            elapsed
        })
        .collect();
    took.sort_unstable();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    println!(
        "verify, second of two keys, {TAIL_SAMPLES} single checks: \
         p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

criterion_group!(benches, tokens);
criterion_main!(benches, tail);
