//! The dice-roller service, shared by the `dice_server` example and the
//! integration test `tests/dice_example.rs` (which pulls it in with
//! `#[path]`). It lives in a sub-directory without a `main.rs`, so cargo does
//! not mistake it for an example of its own.
//!
//! Endpoints (msgpack or JSON bodies, whichever the caller sends):
//! - `roll {sides}` -> a number in 1..=sides
//! - `roll_times {sides, how_many}` -> a list of `how_many` such numbers
//! - `guess {sides, guess}` -> `{rolled, correct}`
//!
//! Out-of-range input is answered with a `validation` error whose details
//! name the field, so clients can branch on the code rather than the text.

// Each user of this module uses a different subset of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use weft_service::{Service, ServiceError};

/// `roll_times` answers at most this many rolls: a limit keeps one request
/// from making an answer of unbounded size.
pub const MAX_ROLLS: u32 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roll {
    pub sides: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollTimes {
    pub sides: u32,
    pub how_many: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guess {
    pub sides: u32,
    pub guess: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessResult {
    pub rolled: u32,
    pub correct: bool,
}

fn check_sides(sides: u32) -> Result<(), ServiceError> {
    if sides == 0 {
        return Err(ServiceError::Validation {
            message: "sides must be at least 1".into(),
            details: Some(serde_json::json!({ "field": "sides", "min": 1, "got": sides })),
        });
    }
    Ok(())
}

/// Build the dice service. `seed` makes the rolls reproducible (tests);
/// `None` seeds from the operating system.
pub fn dice_service(seed: Option<u64>) -> Result<Service, ServiceError> {
    let rng = Arc::new(Mutex::new(match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_entropy(),
    }));
    // One die for every endpoint; the lock is held for one roll only.
    let roll = move |sides: u32| -> u32 {
        let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.gen_range(1..=sides)
    };

    let mut svc = Service::new("dice");
    let r = roll.clone();
    svc.endpoint("roll", move |req: Roll| {
        let r = r.clone();
        async move {
            check_sides(req.sides)?;
            Ok(r(req.sides))
        }
    })?;
    let r = roll.clone();
    svc.endpoint("roll_times", move |req: RollTimes| {
        let r = r.clone();
        async move {
            check_sides(req.sides)?;
            if req.how_many > MAX_ROLLS {
                return Err(ServiceError::Validation {
                    message: format!("how_many must be at most {MAX_ROLLS}"),
                    details: Some(serde_json::json!({ "field": "how_many", "max": MAX_ROLLS, "got": req.how_many })),
                });
            }
            Ok((0..req.how_many).map(|_| r(req.sides)).collect::<Vec<u32>>())
        }
    })?;
    let r = roll;
    svc.endpoint("guess", move |req: Guess| {
        let r = r.clone();
        async move {
            check_sides(req.sides)?;
            if req.guess == 0 || req.guess > req.sides {
                return Err(ServiceError::Validation {
                    message: format!("guess must be between 1 and {}", req.sides),
                    details: Some(serde_json::json!({ "field": "guess", "min": 1, "max": req.sides, "got": req.guess })),
                });
            }
            let rolled = r(req.sides);
            Ok(GuessResult { rolled, correct: rolled == req.guess })
        }
    })?;
    Ok(svc)
}
