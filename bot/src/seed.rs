//! Matches to rate, for the ratings load (`--rate N --load ratings`).
//!
//! A rating needs a committed match, so before measuring, the bot posts
//! pairs of riders and drivers at the same spots, waits until the nodes have
//! matched them, and collects (rider, car) pairs from `GET /matches`. Each
//! pair is rated once during the run: a second rating would be a 409, which
//! measures something else.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use node::wire::{DriverRequest, MatchList, RiderRequest};
use rand::Rng;
use reqwest::Client;
use serde::de::IgnoredAny;
use uuid::Uuid;

use crate::area::Area;
use crate::endpoint::Router;
use crate::error::BotError;
use crate::http;
use crate::world::{self, RunTag};

/// How long the nodes get to match everything posted.
const PATIENCE: Duration = Duration::from_secs(60);

/// One committed match and where to rate it.
#[derive(Debug, Clone)]
pub struct RatingTarget {
    pub url: reqwest::Url,
    pub rider_id: Uuid,
    pub car_number: String,
}

/// Matches listed per `GET /matches` at most (the node's cap).
const LISTED: u64 = 1_000;

/// Posts `count` rider-driver pairs and returns their matches, a listing's
/// worth at a time so that every match is still listed when collected.
pub async fn matches_to_rate(
    router: &Router,
    client: &Client,
    area: &Area,
    run: RunTag,
    count: u64,
    concurrency: usize,
    rng: &mut impl Rng,
) -> Result<Vec<RatingTarget>, BotError> {
    let mut targets = Vec::new();
    let mut first = 0;
    while first < count {
        let chunk = first..(first + LISTED).min(count);
        post_pairs(router, client, area, run, chunk.clone(), concurrency, rng).await?;
        targets.extend(collect(router, client, run, chunk).await?);
        first += LISTED;
    }
    Ok(targets)
}

async fn post_pairs(
    router: &Router,
    client: &Client,
    area: &Area,
    run: RunTag,
    pairs: std::ops::Range<u64>,
    concurrency: usize,
    rng: &mut impl Rng,
) -> Result<(), BotError> {
    let wanted = pairs.end - pairs.start;
    let spots: Vec<_> = pairs
        .map(|i| (i, area.random_position(rng), area.random_position(rng)))
        .collect();
    let posted = futures_util::stream::iter(spots)
        .map(|(i, position, destination)| async move {
            let endpoint = router.endpoint_for(position);
            let rider = RiderRequest {
                name: world::rider_name(run, i as usize),
                position,
                destination,
            };
            let driver = DriverRequest {
                name: world::driver_name(run, i as usize),
                car_number: world::car_number(run, i),
                position,
            };
            let rider = http::post::<_, IgnoredAny>(client, &endpoint.rider, &rider).await;
            let driver = http::post::<_, IgnoredAny>(client, &endpoint.driver, &driver).await;
            rider.is_ok_and(|r| r.status.is_success())
                && driver.is_ok_and(|r| r.status.is_success())
        })
        .buffer_unordered(concurrency)
        .filter(|accepted| std::future::ready(*accepted))
        .count()
        .await as u64;
    if posted < wanted {
        return Err(BotError::Seed(format!(
            "only {posted} of {wanted} rider-driver pairs were accepted"
        )));
    }
    Ok(())
}

/// Waits until the pairs' drivers are all matched; returns their matches.
async fn collect(
    router: &Router,
    client: &Client,
    run: RunTag,
    pairs: std::ops::Range<u64>,
) -> Result<Vec<RatingTarget>, BotError> {
    let cars: HashSet<String> = pairs.map(|i| world::car_number(run, i)).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut targets = Vec::new();
        let mut seen = HashSet::new();
        for endpoint in router.endpoints() {
            let url = endpoint
                .base()
                .join(&format!("matches?limit={LISTED}"))
                .map_err(|e| BotError::Seed(e.to_string()))?;
            let answer = client.get(url).send().await;
            let Ok(list) = (match answer {
                Ok(answer) => answer.json::<MatchList>().await,
                Err(e) => Err(e),
            }) else {
                continue;
            };
            for m in list.matches {
                if cars.contains(&m.car_number) && seen.insert(m.rider_id) {
                    targets.push(RatingTarget {
                        url: endpoint.rating.clone(),
                        rider_id: m.rider_id,
                        car_number: m.car_number,
                    });
                }
            }
        }
        if targets.len() >= cars.len() {
            return Ok(targets);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BotError::Seed(format!(
                "{} of {} pairs matched within {PATIENCE:?}",
                targets.len(),
                cars.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
