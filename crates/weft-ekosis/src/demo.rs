//! The ekosis test application (echo, dice roller, a queued `jobs.submit`,
//! helpers) rebuilt on Weft: used by the interop tests and the example server
//! `eko_demo`, so ekosis' own clients and tools have something to talk to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use weft_queue::{Backoff, Manager, ManagerOptions, QueueError, QueueOptions};
use weft_service::{Service, ServiceError};
use weft_wire::{ErrorBody, ErrorCode};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub message: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roll {
    pub sides: i64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rolled {
    pub result: i64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub n: i64,
}
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobsStatus {
    pub processed: u64,
    pub failed: u64,
    pub last_n: Vec<i64>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    pub seconds: f64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    pub kind: String,
    pub message: String,
}
#[derive(Debug, Deserialize)]
pub struct Empty {}

/// Build the demo service with its manager (queues under `queue_dir`).
pub fn demo_service(name: &str, queue_dir: &std::path::Path, gather_period: Duration) -> Result<(Service, Arc<Manager>), QueueError> {
    let mut svc = Service::new(name);
    let manager = Manager::new(queue_dir, &svc, ManagerOptions { gather_period, history_len: 12 })?;
    manager.register(&mut svc)?;
    svc.endpoint("echo", |e: Echo| async move { Ok(e) })?;
    let errors = manager.errors().clone();
    svc.endpoint("dice_roller.roll", move |r: Roll| {
        let errors = errors.clone();
        async move {
            if r.sides < 1 {
                errors.raise("INVALID_SIDES", "dice_roller.roll called with sides < 1");
                return Err(ServiceError::handler(format!("sides must be >= 1, got {}", r.sides)));
            }
            Ok(Rolled { result: rand::thread_rng().gen_range(1..=r.sides) })
        }
    })?;
    svc.endpoint("dice_roller.guess", |_: Option<Empty>| async { Ok(serde_json::json!({"guess": rand::thread_rng().gen_range(0..10)})) })?;
    let status = Arc::new(Mutex::new(JobsStatus::default()));
    let s2 = status.clone();
    svc.endpoint("jobs.status", move |_: Option<Empty>| {
        let s = s2.clone();
        async move { Ok(s.lock().unwrap_or_else(|p| p.into_inner()).clone()) }
    })?;
    let errors = manager.errors().clone();
    let opts = QueueOptions { max_retries: 0, backoff: Backoff { initial_ms: 10, max_ms: 1000, multiplier: 2.0 }, ..QueueOptions::default() };
    manager.queued_endpoint(&mut svc, "jobs.submit", opts, move |job: Job| {
        let status = status.clone();
        let errors = errors.clone();
        async move {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.last_n.push(job.n);
            if s.last_n.len() > 10 {
                s.last_n.remove(0);
            }
            if job.n < 0 {
                s.failed += 1;
                errors.raise("JOB_FAILED", "jobs.submit handler returned False (n < 0)");
                return Err(ServiceError::handler("n < 0"));
            }
            s.processed += 1;
            Ok(())
        }
    })?;
    svc.endpoint("test.sleep", |s: Sleep| async move {
        tokio::time::sleep(Duration::from_secs_f64(s.seconds.clamp(0.0, 60.0))).await;
        Ok(serde_json::json!({"slept": s.seconds}))
    })?;
    svc.endpoint("test.fail", |f: Fail| async move {
        if f.kind == "processing" {
            Err::<(), _>(ServiceError::handler(f.message))
        } else {
            Err(ServiceError::Wire(ErrorBody::new(ErrorCode::Internal, f.message)))
        }
    })?;
    Ok((svc, manager))
}
