//! Matches to rate, for the ratings load (`--rate N --load ratings`).
//!
//! A rating needs a committed match and the rider's token, so before
//! measuring, the bot posts pairs of riders and drivers at the same spots,
//! keeps each rider's token, and follows the riders on `/communication` of
//! the node that accepted them until every one is matched (the same way a
//! rider's app learns its match; the operators' `GET /matches` is not on the
//! public API). Each pair is rated once during the run: a second rating
//! would be a 409, which measures something else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use reqwest::{Client, Url};
use ride_types::api::{Accepted, AccessToken, DriverRequest, RiderRequest, ServerMessage};
use serde::de::IgnoredAny;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::area::Area;
use crate::endpoint::{Endpoint, Router};
use crate::error::BotError;
use crate::http;
use crate::socket::{Followed, Socket};
use crate::stats::Stats;
use crate::world::{self, RunTag};

/// How long the nodes get to match everything posted.
const PATIENCE: Duration = Duration::from_secs(60);

/// One committed match and where to rate it.
#[derive(Debug, Clone)]
pub struct RatingTarget {
    pub url: reqwest::Url,
    pub rider_id: Uuid,
    /// The rider's token, which the rating must carry.
    pub token: AccessToken,
    pub car_number: String,
}

/// Pairs posted and followed at a time, well under the ids one socket may
/// watch (10,000).
const CHUNK: u64 = 1_000;

/// Posts `count` rider-driver pairs and returns their matches, a chunk at a
/// time.
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
        let chunk = first..(first + CHUNK).min(count);
        let riders = post_pairs(router, client, area, run, chunk, concurrency, rng).await?;
        targets.extend(collect(riders).await?);
        first += CHUNK;
    }
    Ok(targets)
}

/// A rider accepted, and the node that accepted it (after any redirect).
struct Posted {
    base: Url,
    rider: Accepted,
}

async fn post_pairs(
    router: &Router,
    client: &Client,
    area: &Area,
    run: RunTag,
    pairs: std::ops::Range<u64>,
    concurrency: usize,
    rng: &mut impl Rng,
) -> Result<Vec<Posted>, BotError> {
    let wanted = pairs.end - pairs.start;
    let spots: Vec<_> = pairs
        .map(|i| (i, area.random_position(rng), area.random_position(rng)))
        .collect();
    let posted = futures_util::stream::iter(spots)
        .map(|(i, position, destination)| async move {
            // A live endpoint: one found dead at start is set aside.
            let endpoint = router.route(position, Instant::now()).endpoint;
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
            // The driver first: a rider then always has its own driver, at
            // distance 0, when a round sees it, and nobody takes another
            // pair's driver (riders left with no driver in reach expire).
            let driver = http::post::<_, IgnoredAny>(client, &endpoint.driver, &driver).await;
            let rider = http::post::<_, Accepted>(client, &endpoint.rider, &rider).await;
            let driver_ok = driver.is_ok_and(|r| r.status.is_success());
            let reply = rider.ok().filter(|_| driver_ok)?;
            let base = reply
                .redirected_to
                .as_ref()
                .map_or_else(|| endpoint.base().clone(), Endpoint::base_of);
            Some(Posted {
                base,
                rider: reply.body.ok()?,
            })
        })
        .buffer_unordered(concurrency)
        .filter_map(std::future::ready)
        .collect::<Vec<_>>()
        .await;
    if (posted.len() as u64) < wanted {
        return Err(BotError::Seed(format!(
            "only {} of {wanted} rider-driver pairs were accepted",
            posted.len()
        )));
    }
    Ok(posted)
}

/// Follows every rider on the socket of the node that accepted it until
/// each is matched; returns their matches.
async fn collect(riders: Vec<Posted>) -> Result<Vec<RatingTarget>, BotError> {
    let (deliveries, mut delivered) = mpsc::unbounded_channel();
    // The seed's own counters: its socket traffic is not part of the run.
    let stats = Arc::new(Stats::new(Instant::now()));
    let mut by_node: HashMap<Url, Vec<Followed>> = HashMap::new();
    let mut waiting: HashMap<Uuid, AccessToken> = HashMap::new();
    for Posted { base, rider } in riders {
        by_node
            .entry(base)
            .or_default()
            .push((rider.id, rider.token.clone()));
        waiting.insert(rider.id, rider.token);
    }
    // Kept until every match is in: dropping a socket stops it.
    let mut sockets = Vec::with_capacity(by_node.len());
    for (base, requests) in by_node {
        let endpoint = Endpoint::new(base).map_err(|e| BotError::Seed(e.to_string()))?;
        let socket = Socket::spawn(Arc::new(endpoint), deliveries.clone(), Arc::clone(&stats));
        socket.subscribe(requests);
        sockets.push(socket);
    }
    // From here on, `None` means every socket task has ended.
    drop(deliveries);
    let wanted = waiting.len();
    let mut targets = Vec::with_capacity(wanted);
    let deadline = tokio::time::sleep(PATIENCE);
    tokio::pin!(deadline);
    while !waiting.is_empty() {
        let delivery = tokio::select! {
            () = &mut deadline => {
                return Err(BotError::Seed(format!(
                    "{} of {wanted} pairs matched within {PATIENCE:?}",
                    targets.len()
                )));
            }
            delivery = delivered.recv() => delivery,
        };
        let Some(delivery) = delivery else {
            return Err(BotError::Seed("the websockets stopped".into()));
        };
        let ServerMessage::Match(m) = delivery.message else {
            continue;
        };
        if let Some(token) = waiting.remove(&m.rider_id) {
            targets.push(RatingTarget {
                url: delivery.endpoint.rating.clone(),
                rider_id: m.rider_id,
                token,
                car_number: m.car_number,
            });
        }
    }
    Ok(targets)
}
