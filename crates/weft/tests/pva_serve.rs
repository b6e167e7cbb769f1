//! `weft serve` with pvAccess on: demo PVs and a PV bridged to a topic,
//! driven through the `weft pv` and log commands.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

#[test]
fn serve_exposes_demo_and_bridged_pvs() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("w.toml");
    let pvs = dir.path().join("pvs.toml");
    std::fs::write(&pvs, "[[pv]]\nname = \"t:lab:temp\"\ntype = \"double\"\nvalue = 21.5\nwritable = true\n").unwrap();
    std::fs::write(
        &conf,
        format!(
            "[pva]\nenabled = true\ndemo = true\npvs_file = {:?}\nbridges = [{{ pv = \"t:bridge:sp\", topic = \"sp\", kind = \"double\" }}]\n",
            pvs.display().to_string()
        ),
    )
    .unwrap();
    let (port, pva_tcp, pva_udp) = (free_port(), free_port(), free_port());
    let epics = [
        ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".to_string()),
        ("EPICS_PVAS_SERVER_PORT", pva_tcp.to_string()),
        ("EPICS_PVAS_BROADCAST_PORT", pva_udp.to_string()),
        ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".into()),
        ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".into()),
        ("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{pva_udp}")),
        ("EPICS_PVA_AUTO_ADDR_LIST", "NO".into()),
        ("WEFT_ADDR", format!("tcp://127.0.0.1:{port}")),
    ];
    let mut child = Command::new(WEFT)
        .args(["serve", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--http-addr", "127.0.0.1:0"])
        .envs(epics.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = |args: &[&str], stdin: Option<&str>| -> Output {
        let mut c = Command::new(WEFT);
        c.args(args).envs(epics.iter().cloned()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        ch.wait_with_output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let o = run(&["pv", "get", "weft:demo:counter"], None);
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "pva never came up: {}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(first.starts_with("weft:demo:counter "), "{first}");

    let o = run(&["pv", "put", "t:bridge:sp", "12.5"], None);
    assert!(o.status.success(), "{o:?}");
    let o = run(&["consume", "sp", "--from-beginning"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "12.5", "the put is a record");

    let o = run(&["produce", "sp"], Some("33\n"));
    assert!(o.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = run(&["pv", "get", "t:bridge:sp"], None);
        if String::from_utf8_lossy(&o.stdout).trim().ends_with(" 33") {
            break;
        }
        assert!(Instant::now() < deadline, "record never reached the PV: {o:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = run(&["pv", "get", "t:lab:temp"], None);
    assert!(String::from_utf8_lossy(&o.stdout).trim().ends_with(" 21.5"), "PV from pva.pvs_file: {o:?}");
    let o = run(&["pv", "call", "weft:demo:add", "a=1", "b=2"], None);
    assert!(String::from_utf8_lossy(&o.stdout).trim().ends_with(" 3"), "{o:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}
