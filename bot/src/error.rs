//! Errors that stop the bot. Per-request failures are not errors here: they
//! are counted in [`crate::stats`] and reported in the summary.

use std::io;
use std::path::PathBuf;

use ride_types::regions::RegionsError;

use crate::endpoint::EndpointError;

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("could not set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("--regions: {0}")]
    Regions(#[from] RegionsError),
    #[error("no endpoint answers (GET /healthz): {0}")]
    NoLiveEndpoint(String),
    #[error("could not write the record {}: {source}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not prepare matches to rate: {0}")]
    Seed(String),
    #[error("could not write the summary to {}: {source}", path.display())]
    Summary {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
