//! The Redis crate against the real local Redis, a unique key prefix per test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fantasy_cache::{Cache, CacheError, RedisConfig};
use fantasy_messages::testing::prediction;

fn config() -> RedisConfig {
    let url = std::env::var("FANTASY_TEST_REDIS_URL")
        .unwrap_or_else(|_| fantasy_cache::DEFAULT_REDIS_URL.to_owned());
    let mut cfg = RedisConfig::new(url);
    cfg.prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    cfg.prediction_ttl = Duration::from_secs(60);
    cfg
}

async fn ttl_of(cache: &Cache, key: &str) -> i64 {
    let mut conn = cache.connection();
    redis::cmd("TTL")
        .arg(cache.key(key))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn json_values_round_trip_with_their_ttl() {
    let cache = Cache::connect(&config()).await.unwrap();
    cache.ping().await.unwrap();
    let value = serde_json::json!({"answer": 42, "list": [1, 2]});
    cache
        .set_json("k", &value, Duration::from_secs(30))
        .await
        .unwrap();
    let back: serde_json::Value = cache.get_json("k").await.unwrap().unwrap();
    assert_eq!(back, value);
    let ttl = ttl_of(&cache, "k").await;
    assert!((1..=30).contains(&ttl), "ttl {ttl}");
    assert!(
        cache
            .get_json::<serde_json::Value>("missing")
            .await
            .unwrap()
            .is_none()
    );
    cache.delete("k").await.unwrap();
    assert!(
        cache
            .get_json::<serde_json::Value>("k")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn keys_live_under_the_prefix_so_caches_do_not_collide() {
    let (a, b) = (
        Cache::connect(&config()).await.unwrap(),
        Cache::connect(&config()).await.unwrap(),
    );
    a.set_json("same", &1, Duration::from_secs(30))
        .await
        .unwrap();
    b.set_json("same", &2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(a.get_json::<i32>("same").await.unwrap(), Some(1));
    assert_eq!(b.get_json::<i32>("same").await.unwrap(), Some(2));
}

#[tokio::test]
async fn latest_predictions_are_pipelined_and_read_in_order() {
    let cache = Cache::connect(&config()).await.unwrap();
    let predictions: Vec<_> = (0..200)
        .map(|i| prediction(&format!("g{i}"), i as f32 / 200.0))
        .collect();
    cache.set_latest_predictions(&predictions).await.unwrap();
    let ids = ["g5", "missing", "g199"];
    let got = cache.latest_predictions(&ids).await.unwrap();
    assert_eq!(got[0].as_ref(), Some(&predictions[5]));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref(), Some(&predictions[199]));
    assert_eq!(
        cache.latest_prediction("g7").await.unwrap().unwrap(),
        predictions[7]
    );
    let ttl = ttl_of(&cache, "prediction:g7").await;
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn an_older_prediction_never_replaces_a_newer_one() {
    let cache = Cache::connect(&config()).await.unwrap();
    let old = prediction("g1", 0.30);
    let mut new = prediction("g1", 0.35);
    new.predicted_at = old.predicted_at + chrono::Duration::seconds(5);
    // In one batch, out of order.
    cache
        .set_latest_predictions(&[new.clone(), old.clone()])
        .await
        .unwrap();
    assert_eq!(cache.latest_prediction("g1").await.unwrap().unwrap(), new);
    // And as a late redelivery.
    cache.set_latest_predictions(&[old]).await.unwrap();
    assert_eq!(cache.latest_prediction("g1").await.unwrap().unwrap(), new);
}

#[tokio::test]
async fn a_corrupt_value_is_an_error_not_a_panic() {
    let cache = Cache::connect(&config()).await.unwrap();
    let mut conn = cache.connection();
    let () = redis::cmd("SET")
        .arg(cache.key("bad"))
        .arg("{not json")
        .arg("EX")
        .arg(30)
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = cache
        .get_json::<serde_json::Value>("bad")
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
    let () = redis::cmd("HSET")
        .arg(cache.key("prediction:g9"))
        .arg("json")
        .arg(r#"{"schema_version":7}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = cache.latest_prediction("g9").await.unwrap_err();
    assert!(err.to_string().contains("schema_version 7"), "{err}");
    let _: i64 = redis::cmd("DEL")
        .arg(cache.key("prediction:g9"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Has Redis close the cache's connection, as a Redis restart or failover
/// would, and waits until it has.
async fn drop_connection(cache: &Cache) {
    let mut conn = cache.connection();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await
        .unwrap();
    let killer = redis::Client::open(fantasy_cache::DEFAULT_REDIS_URL).unwrap();
    let mut k = killer.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut k)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

#[tokio::test]
async fn the_first_command_after_redis_drops_the_connection_succeeds() {
    let cache = Cache::connect(&config()).await.unwrap();
    // Each call is the first on a dropped connection: none fails (before,
    // the first one met the dead socket: "broken pipe").
    drop_connection(&cache).await;
    cache.ping().await.expect("ping after the drop");
    drop_connection(&cache).await;
    cache
        .set_json("after", &true, Duration::from_secs(30))
        .await
        .expect("set_json after the drop");
    drop_connection(&cache).await;
    assert_eq!(
        cache
            .get_json::<bool>("after")
            .await
            .expect("get_json after the drop"),
        Some(true)
    );
    let p = prediction("g-drop", 0.7);
    drop_connection(&cache).await;
    cache
        .set_latest_predictions(std::slice::from_ref(&p))
        .await
        .expect("set_latest_predictions after the drop");
    drop_connection(&cache).await;
    assert_eq!(
        cache
            .latest_prediction("g-drop")
            .await
            .expect("latest_prediction after the drop"),
        Some(p.clone())
    );
    drop_connection(&cache).await;
    assert_eq!(
        cache
            .latest_predictions(&["g-drop"])
            .await
            .expect("latest_predictions after the drop"),
        vec![Some(p)]
    );
    drop_connection(&cache).await;
    cache.delete("after").await.expect("delete after the drop");
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    cfg.timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    assert!(Cache::connect(&cfg).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
}
