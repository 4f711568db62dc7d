//! Minting and checking a request token (HMAC-SHA256 of the id), the work
//! token checks add to `POST /rider`, `POST /driver`, `POST /rating` and each
//! id subscribed on `/communication`. With a rotated key list the check
//! tries each key; the bench's second key makes that the worst case: a
//! token signed by the last key, and a wrong token tried against both.
//!
//! `cargo bench -p node --bench tokens`

use criterion::{Criterion, criterion_group, criterion_main};
use node::access::{TokenKey, TokenKeys};
use std::hint::black_box;
use uuid::Uuid;

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

criterion_group!(benches, tokens);
criterion_main!(benches);
