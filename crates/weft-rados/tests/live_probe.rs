use weft_rados::{ClientConfig, ConfigSource, Rados};

#[tokio::test]
async fn probe_rw() {
    if std::env::var("WEFT_PROBE").is_err() { return; }
    let _ = tracing_subscriber::fmt().with_env_filter("weft_rados=debug").try_init();
    let src = ConfigSource { conf: Some("/tmp/weft-ceph/ceph.conf".into()), ..Default::default() };
    let cfg = ClientConfig::load(&src).unwrap();
    let r = Rados::connect(cfg).await.unwrap();
    let io = r.ioctx("test").unwrap();
    io.write_full("probe1", b"hello from weft").await.unwrap();
    let d = io.read("probe1", 0, 100).await.unwrap();
    println!("read back: {:?}", String::from_utf8_lossy(&d));
    println!("stat: {:?}", io.stat("probe1").await.unwrap());
}
