//! Simulation mode: riders and drivers who keep asking for rides.
//!
//! One coordinator task owns every entity's state, so there are no locks
//! around it; HTTP requests run in spawned tasks and report back on a channel,
//! and each endpoint's [`Socket`] reports match notices on another. Each
//! second the coordinator sends one request for every idle entity (bounded by
//! `--concurrency`), and once the whole tick's requests are answered it
//! subscribes the new ids with a single frame per endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, Url};
use ride_types::api::{
    Accepted, AccessToken, DriverRequest, MatchNotice, RatingRecorded, RatingRequest, RiderRequest,
    ServerMessage,
};
use tokio::sync::mpsc::{self, UnboundedSender};
use tracing::warn;
use uuid::Uuid;

use crate::area::Area;
use crate::check::now_secs;
use crate::endpoint::{Endpoint, Router};
use crate::error::BotError;
use crate::http::{self, describe_error};
use crate::post_log::PostLine;
use crate::record::Recorder;
use crate::socket::{Delivery, Followed, Socket};
use crate::stats::{Outcome, Stats};
use crate::world::{self, RunTag};

/// Time between two rounds of requests.
const TICK: Duration = Duration::from_secs(1);
/// A match committed just before `expires_at` may still be on its way.
const EXPIRY_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
/// At the end, how long to wait for requests and ratings still in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

pub struct SimConfig {
    pub riders: usize,
    pub drivers: usize,
    pub area: Area,
    pub seed: Option<u64>,
    pub concurrency: usize,
    pub record: Option<PathBuf>,
    /// Where to append one line per rider or driver `POST`, if anywhere.
    pub post_log: Option<PathBuf>,
    /// After the stop, how long to wait for every accepted request's
    /// outcome (0: only for what is in flight).
    pub settle: Duration,
    pub run: RunTag,
}

/// The riders and drivers of this run, named by run and index, each with
/// its own random stream drawn from `seed`.
fn population(config: &SimConfig, seed: u64) -> (Vec<Entity>, Vec<Entity>) {
    let riders = (0..config.riders)
        .map(|i| Entity::new(world::rider_name(config.run, i), None, seed, 0, i))
        .collect();
    let drivers = (0..config.drivers)
        .map(|i| {
            Entity::new(
                world::driver_name(config.run, i),
                Some(world::car_number(config.run, i as u64)),
                seed,
                1,
                i,
            )
        })
        .collect();
    (riders, drivers)
}

/// Runs until `stop` completes, then waits briefly for work in flight.
pub async fn run(
    router: Arc<Router>,
    client: Client,
    config: SimConfig,
    stats: Arc<Stats>,
    stop: impl Future<Output = ()>,
) -> Result<(), BotError> {
    let recorder = config.record.as_deref().map(Recorder::open).transpose()?;
    let post_log = config.post_log.as_deref().map(Recorder::open).transpose()?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (deliveries_tx, mut deliveries) = mpsc::unbounded_channel();
    let seed = config.seed.unwrap_or_else(|| rand::rng().random());
    let (riders, drivers) = population(&config, seed);
    let mut sim = Sim {
        riders,
        drivers,
        waiting: HashMap::new(),
        sites: HashMap::new(),
        client,
        stats,
        area: config.area,
        concurrency: config.concurrency,
        recorder,
        post_log,
        events_tx,
        deliveries_tx,
        in_flight: 0,
        draining: false,
        settling: !config.settle.is_zero(),
    };
    for endpoint in router.endpoints() {
        sim.site(endpoint.base());
    }

    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                sim.tick(&router);
                sim.flush_record()?;
            }
            Some(event) = events.recv() => sim.on_event(event)?,
            Some(delivery) = deliveries.recv() => sim.on_delivery(delivery)?,
        }
    }

    sim.draining = true;
    let deadline = tokio::time::sleep(DRAIN_GRACE.max(config.settle));
    tokio::pin!(deadline);
    while sim.in_flight > 0 || (sim.settling && !sim.waiting.is_empty()) {
        tokio::select! {
            () = &mut deadline => {
                warn!(
                    batches_and_ratings = sim.in_flight,
                    awaiting_outcome = sim.waiting.len(),
                    "stopped waiting for requests still in flight or without an outcome"
                );
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick(), if sim.settling => {
                sim.expire(Utc::now());
                sim.flush_record()?;
            }
            Some(event) = events.recv() => sim.on_event(event)?,
            Some(delivery) = deliveries.recv() => sim.on_delivery(delivery)?,
        }
    }
    // Notices that arrived while draining are still worth recording.
    while let Ok(delivery) = deliveries.try_recv() {
        sim.on_delivery(delivery)?;
    }
    sim.flush_record()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Rider,
    Driver,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Rider => "rider",
            Role::Driver => "driver",
        }
    }
}

/// An endpoint whose socket we listen on: every `--endpoint`, plus any that a
/// redirect led to.
struct Site {
    endpoint: Arc<Endpoint>,
    socket: Socket,
}

struct Entity {
    name: String,
    /// `Some` exactly for drivers.
    car_number: Option<String>,
    /// Per entity, so that with `--seed` each entity's sequence of positions
    /// is the same from run to run whatever order the answers arrive in.
    rng: StdRng,
    state: State,
}

enum State {
    Idle,
    /// Refused by a node at capacity: idle again once its `Retry-After`
    /// has passed, not at the next tick.
    BackingOff(Instant),
    /// A request is in flight.
    Posting,
    /// Accepted; listening on `site`'s socket until the match or `expires_at`.
    Waiting {
        id: Uuid,
        /// Needed to follow the id and, for a rider, to rate the match.
        token: AccessToken,
        site: Arc<Site>,
        expires_at: DateTime<Utc>,
    },
    /// A rider whose rating is in flight.
    Rating,
}

impl Entity {
    fn new(name: String, car_number: Option<String>, seed: u64, role: u64, index: usize) -> Self {
        // Distinct, well-mixed stream per (seed, role, index).
        let stream = (role << 48) ^ index as u64;
        let rng = StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Entity {
            name,
            car_number,
            rng,
            state: State::Idle,
        }
    }
}

/// What a request task reports back.
enum Event {
    /// One tick's requests, all answered (or failed).
    Posted(Vec<Posted>),
    /// A rider's rating finished, whatever its outcome.
    Rated { rider: usize },
}

struct Posted {
    role: Role,
    index: usize,
    /// The accepted answer and the endpoint that gave it (differs from the
    /// one asked when a redirect was followed).
    accepted: Option<(Accepted, Url)>,
    /// A refusal's `Retry-After`.
    retry_after: Option<Duration>,
    /// For `--post-log`.
    line: PostLine,
}

/// A request to send in this tick.
struct Job {
    role: Role,
    index: usize,
    endpoint: Arc<Endpoint>,
    /// The position's own endpoint was set aside, so it goes to this one.
    failover: bool,
    body: Body,
}

enum Body {
    Rider(RiderRequest),
    Driver(DriverRequest),
}

struct Sim {
    riders: Vec<Entity>,
    drivers: Vec<Entity>,
    /// Accepted ids awaiting their match.
    waiting: HashMap<Uuid, (Role, usize)>,
    /// By endpoint base URL.
    sites: HashMap<Url, Arc<Site>>,
    client: Client,
    stats: Arc<Stats>,
    area: Area,
    concurrency: usize,
    recorder: Option<Recorder>,
    /// `--post-log`.
    post_log: Option<Recorder>,
    events_tx: UnboundedSender<Event>,
    deliveries_tx: UnboundedSender<Delivery>,
    /// Request batches and ratings not yet reported back.
    in_flight: usize,
    /// Stopping: start nothing new.
    draining: bool,
    /// Draining also waits for the outcome of every accepted request.
    settling: bool,
}

impl Sim {
    /// The site for an endpoint base URL, connecting its socket on first use.
    fn site(&mut self, base: &Url) -> Option<Arc<Site>> {
        if let Some(site) = self.sites.get(base) {
            return Some(Arc::clone(site));
        }
        let endpoint = match Endpoint::new(base.clone()) {
            Ok(endpoint) => Arc::new(endpoint),
            Err(e) => {
                warn!(%base, error = %e, "cannot listen for matches from this endpoint");
                return None;
            }
        };
        let socket = Socket::spawn(
            Arc::clone(&endpoint),
            self.deliveries_tx.clone(),
            Arc::clone(&self.stats),
        );
        let site = Arc::new(Site { endpoint, socket });
        self.sites.insert(base.clone(), Arc::clone(&site));
        Some(site)
    }

    fn entity(&mut self, role: Role, index: usize) -> Option<&mut Entity> {
        match role {
            Role::Rider => self.riders.get_mut(index),
            Role::Driver => self.drivers.get_mut(index),
        }
    }

    /// Expires stale waits, then sends a request for every idle entity.
    fn tick(&mut self, router: &Arc<Router>) {
        self.expire(Utc::now());
        let area = self.area;
        let mut jobs = Vec::new();
        for (role, entities) in [
            (Role::Rider, &mut self.riders),
            (Role::Driver, &mut self.drivers),
        ] {
            let now = Instant::now();
            for (index, entity) in entities.iter_mut().enumerate() {
                match entity.state {
                    State::Idle => {}
                    State::BackingOff(until) if until <= now => {}
                    _ => continue,
                }
                let position = area.random_position(&mut entity.rng);
                let body = match &entity.car_number {
                    Some(car_number) => Body::Driver(DriverRequest {
                        name: entity.name.clone(),
                        car_number: car_number.clone(),
                        position,
                    }),
                    None => Body::Rider(RiderRequest {
                        name: entity.name.clone(),
                        position,
                        destination: area.random_position(&mut entity.rng),
                    }),
                };
                entity.state = State::Posting;
                let route = router.route(position, now);
                jobs.push(Job {
                    role,
                    index,
                    endpoint: Arc::clone(route.endpoint),
                    failover: route.failover,
                    body,
                });
            }
        }
        if jobs.is_empty() {
            return;
        }
        self.in_flight += 1;
        let client = self.client.clone();
        let stats = Arc::clone(&self.stats);
        let events = self.events_tx.clone();
        let concurrency = self.concurrency;
        let router = Arc::clone(router);
        tokio::spawn(async move {
            let posted = futures_util::stream::iter(jobs)
                .map(|job| send_job(&client, &stats, &router, job))
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let _ = events.send(Event::Posted(posted));
        });
    }

    /// Frees entities whose request expired without a match.
    fn expire(&mut self, now: DateTime<Utc>) {
        for (role, entities) in [
            (Role::Rider, &mut self.riders),
            (Role::Driver, &mut self.drivers),
        ] {
            for entity in entities.iter_mut() {
                let State::Waiting {
                    id,
                    site,
                    expires_at,
                    ..
                } = &entity.state
                else {
                    continue;
                };
                if *expires_at + EXPIRY_GRACE > now {
                    continue;
                }
                site.socket.forget(*id);
                self.waiting.remove(id);
                self.stats.record_expired(role == Role::Rider);
                entity.state = State::Idle;
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), BotError> {
        self.in_flight = self.in_flight.saturating_sub(1);
        match event {
            Event::Posted(posted) => return self.on_posted(posted),
            Event::Rated { rider } => {
                if let Some(entity) = self.entity(Role::Rider, rider) {
                    entity.state = State::Idle;
                }
            }
        }
        Ok(())
    }

    /// Starts waiting for every accepted id, with one subscribe per site.
    fn on_posted(&mut self, posted: Vec<Posted>) -> Result<(), BotError> {
        let mut subscriptions: HashMap<Url, (Arc<Site>, Vec<Followed>)> = HashMap::new();
        for Posted {
            role,
            index,
            accepted,
            retry_after,
            line,
        } in posted
        {
            if let Some(log) = &mut self.post_log {
                log.write(&line)?;
            }
            let waiting = match accepted {
                Some((accepted, base)) if !self.draining || self.settling => {
                    self.site(&base).map(|site| (accepted, site))
                }
                _ => None,
            };
            let Some((accepted, site)) = waiting else {
                if let Some(entity) = self.entity(role, index) {
                    entity.state = match retry_after {
                        Some(wait) => State::BackingOff(Instant::now() + wait),
                        None => State::Idle,
                    };
                }
                continue;
            };
            let Some(entity) = self.entity(role, index) else {
                continue;
            };
            let id = accepted.id;
            entity.state = State::Waiting {
                id,
                token: accepted.token.clone(),
                site: Arc::clone(&site),
                expires_at: accepted.expires_at,
            };
            self.waiting.insert(id, (role, index));
            subscriptions
                .entry(site.endpoint.base().clone())
                .or_insert_with(|| (site, Vec::new()))
                .1
                .push((id, accepted.token));
        }
        for (site, requests) in subscriptions.into_values() {
            site.socket.subscribe(requests);
        }
        Ok(())
    }

    fn on_delivery(&mut self, delivery: Delivery) -> Result<(), BotError> {
        if let Some(recorder) = &mut self.recorder {
            recorder.append(&delivery)?;
        }
        if let ServerMessage::Match(notice) = delivery.message {
            self.on_match(notice);
        }
        Ok(())
    }

    /// A notice may reach us twice (once on the rider's socket, once on the
    /// driver's, or again after a resubscribe); removing the id from
    /// `waiting` makes each side count once.
    fn on_match(&mut self, notice: MatchNotice) {
        if let Some((Role::Driver, index)) = self.waiting.get(&notice.driver_id).copied() {
            self.waiting.remove(&notice.driver_id);
            self.stats.record_driver_notice();
            if let Some(entity) = self.entity(Role::Driver, index) {
                if let State::Waiting { id, site, .. } = &entity.state {
                    site.socket.forget(*id);
                }
                entity.state = State::Idle;
            }
        }
        let Some((Role::Rider, index)) = self.waiting.get(&notice.rider_id).copied() else {
            return;
        };
        self.waiting.remove(&notice.rider_id);
        self.stats.record_match(notice.fare_taka);
        let draining = self.draining;
        let Some(entity) = self.entity(Role::Rider, index) else {
            return;
        };
        let State::Waiting {
            id, token, site, ..
        } = std::mem::replace(&mut entity.state, State::Idle)
        else {
            return;
        };
        site.socket.forget(id);
        if draining {
            return;
        }
        entity.state = State::Rating;
        let rating = RatingRequest {
            rider_id: notice.rider_id,
            token: Some(token),
            car_number: notice.car_number,
            stars: entity.rng.random_range(1..=5),
        };
        self.in_flight += 1;
        let client = self.client.clone();
        let stats = Arc::clone(&self.stats);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let outcome = match http::post::<_, RatingRecorded>(
                &client,
                &site.endpoint.rating,
                &rating,
            )
            .await
            {
                Ok(reply) => {
                    if let Err(problem) = &reply.body
                        && let Some(text) = stats.note_problem(|| problem.clone())
                    {
                        warn!("rating refused: {text} (further problems are counted, not logged)");
                    }
                    reply.outcome()
                }
                Err(e) => {
                    note_transport_error(&stats, &e);
                    Outcome::Transport
                }
            };
            stats.record_rating(outcome);
            let _ = events.send(Event::Rated { rider: index });
        });
    }

    fn flush_record(&mut self) -> Result<(), BotError> {
        for recorder in [&mut self.recorder, &mut self.post_log]
            .into_iter()
            .flatten()
        {
            recorder.flush()?;
        }
        Ok(())
    }
}

/// Sends one rider or driver request and counts its outcome; sets aside
/// the endpoint where it met a dead node, if it did.
async fn send_job(client: &Client, stats: &Stats, router: &Router, job: Job) -> Posted {
    let started = Instant::now();
    let sent_at = now_secs();
    let url = match &job.body {
        Body::Rider(_) => &job.endpoint.rider,
        Body::Driver(_) => &job.endpoint.driver,
    };
    let result = match &job.body {
        Body::Rider(body) => http::post::<_, Accepted>(client, url, body).await,
        Body::Driver(body) => http::post::<_, Accepted>(client, url, body).await,
    };
    let latency = started.elapsed();
    let line = PostLine::new(job.role.name(), (sent_at, now_secs()), url, &result);
    if job.failover {
        stats.record_failover();
    }
    let dead_at = match &result {
        Ok(reply) => reply.dead_at(url),
        Err(e) => http::refused_at(e),
    };
    if let Some(dead) = dead_at {
        stats.record_failed_post();
        router.set_aside(dead, Instant::now());
    }
    let mut retry_after = None;
    let accepted = match result {
        Ok(reply) => {
            retry_after = reply.retry_after;
            stats.record_request(reply.outcome(), latency);
            stats.record_shed(reply.outcome(), latency);
            let base = reply
                .redirected_to
                .as_ref()
                .map_or_else(|| job.endpoint.base().clone(), Endpoint::base_of);
            match reply.body {
                Ok(accepted) => Some((accepted, base)),
                Err(problem) => {
                    if let Some(text) = stats.note_problem(|| problem) {
                        warn!("request refused: {text} (further problems are counted, not logged)");
                    }
                    None
                }
            }
        }
        Err(e) => {
            stats.record_request(Outcome::Transport, latency);
            note_transport_error(stats, &e);
            None
        }
    };
    Posted {
        role: job.role,
        index: job.index,
        accepted,
        retry_after,
        line,
    }
}

fn note_transport_error(stats: &Stats, error: &reqwest::Error) {
    if let Some(text) = stats.note_problem(|| describe_error(error)) {
        warn!("{text} (further errors are counted, not logged)");
    }
}
