//! The dice-roller example's service, served over a real TCP socket and
//! called with `weft_net::Client`: answers, ranges and validation errors.

#[path = "../examples/common/dice_service.rs"]
mod dice_service;

use std::sync::Arc;
use std::time::Duration;

use dice_service::{dice_service, Guess, GuessResult, Roll, RollTimes, MAX_ROLLS};
use weft_net::{Client, ClientConfig, ClientError, Endpoint, Server, ServerConfig};
use weft_wire::ErrorCode;

async fn start(seed: u64) -> (Server, Client) {
    let handler = dice_service(Some(seed)).expect("routes are distinct").into_handler();
    let server = Server::new(ServerConfig::default(), handler as Arc<dyn weft_net::Handler>);
    let addr = server.bind_tcp("127.0.0.1:0").await.expect("bind loopback");
    let endpoint: Endpoint = format!("tcp://{addr}").parse().expect("endpoint");
    let config = ClientConfig { request_timeout: Duration::from_secs(10), ..ClientConfig::default() };
    let client = Client::connect(endpoint, config).await.expect("connect");
    (server, client)
}

fn validation_field(e: ClientError) -> String {
    match e {
        ClientError::Remote(body) => {
            assert_eq!(body.code, ErrorCode::Validation, "{body}");
            body.details.and_then(|d| d.get("field").and_then(|f| f.as_str()).map(str::to_owned)).expect("details name the field")
        }
        other => panic!("expected a validation error, got {other}"),
    }
}

#[tokio::test]
async fn roll_stays_in_range() {
    let (server, client) = start(1).await;
    for sides in [1u32, 2, 6, 20, u32::MAX] {
        for _ in 0..50 {
            let n: u32 = client.call("roll", &Roll { sides }).await.expect("roll");
            assert!((1..=sides).contains(&n), "{n} out of 1..={sides}");
        }
    }
    // A d1 has one answer.
    assert_eq!(client.call::<_, u32>("roll", &Roll { sides: 1 }).await.expect("roll"), 1);
    client.close();
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn roll_times_returns_how_many() {
    let (server, client) = start(2).await;
    for how_many in [0u32, 1, 10, MAX_ROLLS] {
        let v: Vec<u32> = client.call("roll_times", &RollTimes { sides: 6, how_many }).await.expect("roll_times");
        assert_eq!(v.len(), how_many as usize);
        assert!(v.iter().all(|n| (1..=6).contains(n)), "{v:?}");
    }
    // With a thousand rolls of a d6, every face shows up (the chance that
    // one does not is below 1e-70).
    let v: Vec<u32> = client.call("roll_times", &RollTimes { sides: 6, how_many: MAX_ROLLS }).await.expect("roll_times");
    for face in 1..=6 {
        assert!(v.contains(&face), "face {face} missing");
    }
    client.close();
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn guess_reports_the_roll() {
    let (server, client) = start(3).await;
    let r: GuessResult = client.call("guess", &Guess { sides: 1, guess: 1 }).await.expect("guess");
    assert_eq!(r, GuessResult { rolled: 1, correct: true });
    let mut right = 0;
    for _ in 0..200 {
        let r: GuessResult = client.call("guess", &Guess { sides: 2, guess: 1 }).await.expect("guess");
        assert!((1..=2).contains(&r.rolled));
        assert_eq!(r.correct, r.rolled == 1);
        right += u32::from(r.correct);
    }
    // Not a fairness test: only that both outcomes happen.
    assert!(right > 0 && right < 200, "{right} of 200");
    client.close();
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn bad_input_is_a_validation_error_and_the_connection_carries_on() {
    let (server, client) = start(4).await;
    let e = client.call::<_, u32>("roll", &Roll { sides: 0 }).await.expect_err("sides 0");
    assert_eq!(validation_field(e), "sides");
    let e = client.call::<_, Vec<u32>>("roll_times", &RollTimes { sides: 0, how_many: 1 }).await.expect_err("sides 0");
    assert_eq!(validation_field(e), "sides");
    let e = client
        .call::<_, Vec<u32>>("roll_times", &RollTimes { sides: 6, how_many: MAX_ROLLS + 1 })
        .await
        .expect_err("too many");
    assert_eq!(validation_field(e), "how_many");
    for guess in [0, 7] {
        let e = client.call::<_, GuessResult>("guess", &Guess { sides: 6, guess }).await.expect_err("guess out of range");
        assert_eq!(validation_field(e), "guess");
    }
    let e = client.call::<_, GuessResult>("guess", &Guess { sides: 0, guess: 1 }).await.expect_err("sides 0");
    assert_eq!(validation_field(e), "sides");

    // A body of the wrong shape is `bad_body`, not `validation`.
    let e = client.call::<_, u32>("roll", &serde_json::json!({ "faces": 6 })).await.expect_err("wrong field");
    assert_eq!(e.code(), Some(ErrorCode::BadBody), "{e}");
    // A route the service does not have.
    let e = client.call::<_, u32>("roll_dice", &Roll { sides: 6 }).await.expect_err("unknown route");
    assert_eq!(e.code(), Some(ErrorCode::UnknownRoute), "{e}");

    // JSON bodies work too, and the same connection still serves.
    let n = client.call_json("roll", &serde_json::json!({ "sides": 6 })).await.expect("json roll");
    assert!(n.as_u64().is_some_and(|n| (1..=6).contains(&n)), "{n}");

    // The per-endpoint stats saw the refusals.
    let stats = client.call_json("weft.stats", &serde_json::Value::Null).await.expect("stats");
    let errors = stats.get("endpoint.roll.errors").and_then(|v| v.as_u64());
    assert!(errors.is_some_and(|n| n >= 2), "stats: {stats}");
    client.close();
    server.shutdown(Duration::from_secs(2)).await;
}
