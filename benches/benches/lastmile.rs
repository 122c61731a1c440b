//! Hot paths of last-mile payment sessions: the 18-digit reference (generate, check) and the
//! driver OTP (derive, verify). Target: OTP verify ≤ 0.5 µs (about two SHA-256 compressions).

use criterion::{Criterion, criterion_group, criterion_main};
use ipay_engine::ids::PaymentIntentId;
use ipay_lastmile::otp::OtpKey;
use ipay_lastmile::reference::IpayReference;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("lastmile_reference");
    g.bench_function("generate", |b| b.iter(IpayReference::generate));
    let typed = IpayReference::generate().to_string();
    g.bench_function("check_18_digits", |b| {
        b.iter(|| IpayReference::parse(black_box(&typed)))
    });
    let grouped = IpayReference::generate().grouped();
    g.bench_function("check_grouped", |b| {
        b.iter(|| IpayReference::parse(black_box(&grouped)))
    });
    g.finish();
}

fn otp(c: &mut Criterion) {
    let mut g = c.benchmark_group("lastmile_otp");
    let key = OtpKey::new(&OtpKey::generate_secret());
    let r = IpayReference::generate();
    let pid = PaymentIntentId::new_at(1_800_000_000_000).to_string();
    let right = key.derive(&r, &pid).expose().to_string();
    let wrong = format!("{:04}", (right.parse::<u32>().unwrap() + 1) % 10_000);
    g.bench_function("derive", |b| {
        b.iter(|| key.derive(black_box(&r), black_box(&pid)))
    });
    g.bench_function("verify_correct", |b| {
        b.iter(|| key.verify(black_box(&r), black_box(&pid), black_box(&right)))
    });
    g.bench_function("verify_wrong", |b| {
        b.iter(|| key.verify(black_box(&r), black_box(&pid), black_box(&wrong)))
    });
    g.bench_function("key_setup", |b| {
        let secret = OtpKey::generate_secret();
        b.iter(|| OtpKey::new(black_box(&secret)))
    });
    g.finish();
}

criterion_group!(benches, reference, otp);
criterion_main!(benches);
