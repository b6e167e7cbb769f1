use std::sync::Arc;
use weft_rados::{ClientConfig, ConfigSource};

#[tokio::test]
async fn probe_mon() {
    if std::env::var("WEFT_PROBE").is_err() { return; }
    let _ = tracing_subscriber::fmt().with_env_filter("debug").try_init();
    let src = ConfigSource { conf: Some("/tmp/weft-ceph/ceph.conf".into()), ..Default::default() };
    let cfg = Arc::new(ClientConfig::load(&src).unwrap());
    let mc = weft_rados::monc::MonClient::connect(cfg).await.unwrap();
    let m = mc.wait_for_osdmap(1, std::time::Duration::from_secs(5)).await.unwrap();
    println!("epoch {} pools {:?}", m.epoch, m.pool_names);
    let (out, rs) = mc.command(&serde_json::json!({"prefix":"osd pool ls","format":"json"}), b"").await.unwrap();
    println!("{} {}", String::from_utf8_lossy(&out), rs);
}
