//! The interactive screen: ratatui over crossterm. `draw` is a pure
//! function of the view and the UI state, so tests render it into a
//! `TestBackend` and read the cells.

use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use tokio::sync::mpsc;
use weft_net::Client;

use crate::model::{bytes, per_sec, EndpointRow, Sample, View};
use crate::panels::{id_list, ClusterNodeRow, ClusterPartitionRow, ClusterView, PvaView, TableRow};
use crate::{gather, TopError};

/// How the endpoint table is ordered (key `s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Rate,
    Calls,
    P99,
    Name,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Rate => Sort::Calls,
            Sort::Calls => Sort::P99,
            Sort::P99 => Sort::Name,
            Sort::Name => Sort::Rate,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Sort::Rate => "calls/s",
            Sort::Calls => "calls",
            Sort::P99 => "p99",
            Sort::Name => "name",
        }
    }
    fn apply(self, rows: &mut [EndpointRow]) {
        match self {
            Sort::Rate => {} // the view's own order
            Sort::Calls => rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.route.cmp(&b.route))),
            Sort::P99 => rows.sort_by(|a, b| b.p99_us.cmp(&a.p99_us).then(a.route.cmp(&b.route))),
            Sort::Name => rows.sort_by(|a, b| a.route.cmp(&b.route)),
        }
    }
}

/// Which panels fill the screen (Tab cycles; 1, 2, 3 jump).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Screen {
    /// Endpoints, topics, consumer groups, queues.
    #[default]
    Overview,
    /// Nodes, partition groups, rebalancer moves.
    Cluster,
    /// Tables and pvAccess.
    TablesPv,
}

impl Screen {
    fn next(self) -> Screen {
        match self {
            Screen::Overview => Screen::Cluster,
            Screen::Cluster => Screen::TablesPv,
            Screen::TablesPv => Screen::Overview,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Screen::Overview => "overview",
            Screen::Cluster => "cluster",
            Screen::TablesPv => "tables+pv",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ui {
    pub screen: Screen,
    pub sort: Sort,
    pub paused: bool,
    pub hide_idle: bool,
    /// The last failure to reach the node, shown until a sample succeeds.
    pub error: Option<String>,
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The HTTP gateway's line of the header (text and screen alike).
pub fn http_line(h: &crate::model::HttpRow) -> String {
    format!("http requests {}   /s {}   4xx {}   5xx {}   p99 us {}", h.requests, per_sec(h.rate), h.errors_4xx, h.errors_5xx, opt(h.p99_us))
}

fn header_style() -> Style {
    Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
}

/// Draws one screen.
pub fn draw(f: &mut Frame, view: Option<&View>, ui: &Ui) {
    let area = f.area();
    let Some(v) = view else {
        let msg = ui.error.as_deref().unwrap_or("waiting for the first sample...");
        f.render_widget(Paragraph::new(msg).block(Block::bordered().title(" weft top ")), area);
        return;
    };
    let head_lines = 2 + u16::from(v.http.is_some()) + u16::from(v.cluster.is_some() || v.cluster_error.is_some());
    let [head, body, foot] = Layout::vertical([Constraint::Length(head_lines), Constraint::Min(3), Constraint::Length(1)]).areas(area);

    let status = match (&ui.error, ui.paused) {
        (Some(e), _) => format!("  ! {e}"),
        (None, true) => "  (paused)".into(),
        (None, false) => String::new(),
    };
    let lines = vec![
        Line::from(vec![
            format!("weft {} ", v.node.name).bold(),
            format!("{}  v{}  up {:.0}s", v.node.id, v.node.version, v.node.uptime_s).into(),
            status.red(),
        ]),
        Line::from(format!(
            "connections {}   frames in/s {}   refused {}   {}",
            v.connections_open,
            per_sec(v.frames_in_rate),
            v.refused,
            v.node.transports.join(" ")
        )),
    ];
    let mut lines = lines;
    if let Some(h) = &v.http {
        lines.push(Line::from(http_line(h)));
    }
    if let Some(c) = &v.cluster {
        lines.push(Line::from(cluster_line(c)));
    } else if let Some(e) = &v.cluster_error {
        lines.push(Line::from(format!("cluster: {e}")).red());
    }
    f.render_widget(Paragraph::new(lines), head);
    match ui.screen {
        Screen::Overview => draw_overview(f, body, v, ui),
        Screen::Cluster => draw_cluster(f, body, v),
        Screen::TablesPv => draw_tables_pv(f, body, v),
    }
    let views = [Screen::Overview, Screen::Cluster, Screen::TablesPv]
        .iter()
        .map(|s| if *s == ui.screen { format!("[{}]", s.label()) } else { s.label().to_owned() })
        .collect::<Vec<_>>()
        .join(" ");
    let keys = match ui.screen {
        Screen::Overview => "   s sort   i hide idle endpoints",
        _ => "",
    };
    f.render_widget(Paragraph::new(format!("q quit   Tab view: {views}{keys}   p pause")), foot);
}

fn small(n: usize) -> Constraint {
    Constraint::Length(if n == 0 { 0 } else { (n as u16).saturating_add(3).min(12) })
}

fn draw_overview(f: &mut Frame, area: Rect, v: &View, ui: &Ui) {
    let mut endpoints = v.endpoints.clone();
    if ui.hide_idle {
        endpoints.retain(|e| e.calls > 0);
    }
    ui.sort.apply(&mut endpoints);
    let [eps, tops, grps, ques] = Layout::vertical([Constraint::Min(5), small(v.topics.len()), small(v.groups.len()), small(v.queues.len())]).areas(area);

    let rows =
        endpoints.iter().map(|e| Row::new(vec![e.route.clone(), e.calls.to_string(), per_sec(e.rate), e.errors.to_string(), opt(e.p50_us), opt(e.p99_us)]));
    let t = Table::new(
        rows,
        [Constraint::Fill(1), Constraint::Length(10), Constraint::Length(8), Constraint::Length(7), Constraint::Length(9), Constraint::Length(9)],
    )
    .header(Row::new(["ENDPOINT", "CALLS", "/S", "ERRORS", "P50 US", "P99 US"]).style(header_style()))
    .block(Block::bordered().title(format!(" endpoints (by {}) ", ui.sort.label())));
    f.render_widget(t, eps);

    if !v.topics.is_empty() {
        let rows = v.topics.iter().map(|t| {
            let row = Row::new(vec![t.name.clone(), t.partitions.to_string(), t.records.to_string(), per_sec(t.rate), bytes(t.size_bytes)]);
            if t.poisoned > 0 {
                row.red()
            } else {
                row
            }
        });
        let t = Table::new(rows, [Constraint::Fill(1), Constraint::Length(11), Constraint::Length(12), Constraint::Length(8), Constraint::Length(11)])
            .header(Row::new(["TOPIC", "PARTITIONS", "RECORDS", "/S", "SIZE"]).style(header_style()))
            .block(Block::bordered().title(" topics "));
        f.render_widget(t, tops);
    }
    if !v.groups.is_empty() {
        let rows = v.groups.iter().map(|g| Row::new(vec![g.group.clone(), g.state.clone(), g.members.to_string(), g.total_lag.to_string()]));
        let t = Table::new(rows, [Constraint::Fill(1), Constraint::Length(14), Constraint::Length(8), Constraint::Length(12)])
            .header(Row::new(["GROUP", "STATE", "MEMBERS", "LAG"]).style(header_style()))
            .block(Block::bordered().title(" consumer groups "));
        f.render_widget(t, grps);
    }
    if !v.queues.is_empty() {
        let rows = v.queues.iter().map(|q| {
            Row::new(vec![
                q.name.clone(),
                q.kind.clone(),
                q.pending.to_string(),
                q.errors.to_string(),
                q.in_flight.to_string(),
                per_sec(q.rate),
                q.state.to_string(),
            ])
        });
        let t = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(7),
                Constraint::Length(15),
            ],
        )
        .header(Row::new(["QUEUE", "KIND", "PENDING", "ERRORS", "IN FLIGHT", "/S", "STATE"]).style(header_style()))
        .block(Block::bordered().title(" queues "));
        f.render_widget(t, ques);
    }
}

/// The cluster summary line (screen header and text alike).
pub fn cluster_line(c: &ClusterView) -> String {
    let moves = if c.moves.is_empty() { String::new() } else { format!("  moves {}", c.moves.len()) };
    format!(
        "cluster node {}  meta leader {}  up {}/{}  term {}  leaderless {}  under-replicated {}{moves}",
        c.node_id,
        opt(c.meta_leader),
        c.nodes_live,
        c.nodes.len(),
        c.max_term,
        c.leaderless,
        c.under_replicated,
    )
}

/// Elections and leader changes over the groups hosted here.
pub fn elections_line(c: &ClusterView) -> String {
    format!("elections {} ({}/s)  leader changes/s {}", c.elections, per_sec(c.elections_rate), per_sec(c.leader_changes_rate))
}

/// The partition appliers: records and bytes written here per second, and
/// their queue now; None from a node that does not report them.
pub fn apply_line(c: &ClusterView) -> Option<String> {
    let (entries, queued) = (c.apply_queued_entries?, c.apply_queued_bytes?);
    let bytes_rate = c.applied_bytes_rate.map_or_else(|| "-".into(), |r| bytes(r.round() as u64));
    Some(format!("applier records/s {}  bytes/s {bytes_rate}  queued {entries} entries ({})", per_sec(c.applied_records_rate), bytes(queued)))
}

/// A panel with a single line saying why it is empty.
fn empty_panel(f: &mut Frame, area: Rect, title: &str, why: &str) {
    f.render_widget(Paragraph::new(why.to_owned()).block(Block::bordered().title(format!(" {title} "))), area);
}

/// One cell per cluster node row (screen and text alike).
pub fn node_cells(n: &ClusterNodeRow) -> [String; 6] {
    [
        n.id.to_string(),
        if n.roles.is_empty() { "-".into() } else { n.roles.clone() },
        if n.voter { "voter".into() } else { "-".into() },
        if n.live { "up".into() } else { "DOWN".into() },
        n.last_contact_ms.map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
        if n.meta_leader { "leader".into() } else { String::new() },
    ]
}

/// One cell per partition row.
pub fn partition_cells(p: &ClusterPartitionRow) -> [String; 7] {
    [
        format!("{}/{}", p.topic, p.partition),
        opt(p.leader),
        id_list(&p.replicas),
        p.in_sync.as_deref().map_or_else(|| "?".into(), id_list),
        opt(p.high_watermark),
        per_sec(p.rate),
        opt(p.lag),
    ]
}

fn draw_cluster(f: &mut Frame, area: Rect, v: &View) {
    let Some(c) = &v.cluster else {
        let why = v.cluster_error.as_deref().unwrap_or("not in cluster mode (weft serve --node-id ... --cluster-peers ...)");
        return empty_panel(f, area, "cluster", why);
    };
    let apply = apply_line(c);
    let [nodes, applier, parts, moves] =
        Layout::vertical([small(c.nodes.len()), Constraint::Length(u16::from(apply.is_some())), Constraint::Min(4), small(c.moves.len())]).areas(area);
    let rows = c.nodes.iter().map(|n| {
        let mut cells = node_cells(n).to_vec();
        cells.push(n.addr.clone());
        let row = Row::new(cells);
        if !n.live {
            row.red()
        } else if n.meta_leader {
            row.bold()
        } else {
            row
        }
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(13),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(13),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(["NODE", "ROLES", "VOTE", "LIVE", "LAST CONTACT", "METADATA", "ADDR"]).style(header_style()))
    .block(Block::bordered().title(format!(" cluster nodes   {} ", elections_line(c))));
    f.render_widget(t, nodes);
    if let Some(line) = apply {
        f.render_widget(Paragraph::new(format!(" {line}")), applier);
    }
    if c.partitions.is_empty() {
        empty_panel(f, parts, "partition groups", "no replicated topics");
    } else {
        let rows = c.partitions.iter().map(|p| {
            let row = Row::new(partition_cells(p).to_vec());
            let short = p.leader.is_none() || p.under_replicated;
            if short {
                row.red()
            } else {
                row
            }
        });
        let t = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(7),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["PARTITION", "LEADER", "REPLICAS", "IN SYNC", "HIGH WATER", "/S", "LAG"]).style(header_style()))
        .block(Block::bordered().title(" partition groups (most lagging first; in sync known on the leader) "));
        f.render_widget(t, parts);
    }
    if !c.moves.is_empty() {
        let rows = c.moves.iter().map(|m| Row::new(vec![m.group.to_string(), m.from.to_string(), m.to.to_string(), m.reason.clone()]));
        let t = Table::new(rows, [Constraint::Length(8), Constraint::Length(6), Constraint::Length(6), Constraint::Fill(1)])
            .header(Row::new(["GROUP", "FROM", "TO", "WHY"]).style(header_style()))
            .block(Block::bordered().title(format!(" rebalancer moves (done {}, cancelled {}) ", c.moves_done, c.moves_cancelled)));
        f.render_widget(t, moves);
    }
}

/// One cell per table row.
pub fn table_cells(t: &TableRow) -> [String; 8] {
    [
        t.name.clone(),
        if t.replicated { "replicated".into() } else { "local".into() },
        if t.replicated { format!("{} ({})", opt(t.leader), id_list(&t.replicas)) } else { "-".into() },
        opt(t.revision),
        opt(t.keys),
        t.bytes.map_or_else(|| "-".into(), bytes),
        per_sec(t.rate),
        opt(t.watchers),
    ]
}

/// The pvAccess summary line.
pub fn pva_line(p: &PvaView) -> String {
    format!(
        "pvAccess channels {}   monitors {}   updates {}   updates/s {}   connections (since start) {}   PVs {}",
        p.channels,
        p.monitors,
        p.updates,
        per_sec(p.updates_rate),
        p.connections,
        p.pvs_total
    )
}

fn draw_tables_pv(f: &mut Frame, area: Rect, v: &View) {
    let pv_rows = v.pva.as_ref().map_or(0, |p| p.pvs.len());
    let [tabs, pvs] = Layout::vertical([Constraint::Fill(1), Constraint::Length((pv_rows as u16).saturating_add(3).clamp(3, 16))]).areas(area);
    if v.tables.is_empty() {
        empty_panel(f, tabs, "tables", "no tables");
    } else {
        let rows = v.tables.iter().map(|t| Row::new(table_cells(t).to_vec()));
        let t = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(11),
                Constraint::Length(14),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(["TABLE", "KIND", "LEADER", "REVISION", "KEYS", "SIZE", "WRITES/S", "WATCHERS"]).style(header_style()))
        .block(Block::bordered().title(" tables (busiest first) "));
        f.render_widget(t, tabs);
    }
    let Some(p) = &v.pva else {
        return empty_panel(f, pvs, "pvAccess", "pvAccess not served (pva.enabled)");
    };
    let rows =
        p.pvs.iter().map(|pv| Row::new(vec![pv.name.clone(), pv.r#type.clone(), pv.display.clone(), if pv.writable { "rw".into() } else { "r".into() }]));
    let more = if p.pvs_total > p.pvs.len() { format!(" (first {} of {})", p.pvs.len(), p.pvs_total) } else { String::new() };
    let t = Table::new(rows, [Constraint::Length(28), Constraint::Length(26), Constraint::Fill(1), Constraint::Length(3)])
        .header(Row::new(["PV", "TYPE", "VALUE", "RW"]).style(header_style()))
        .block(Block::bordered().title(format!(" {}{more} ", pva_line(p))));
    f.render_widget(t, pvs);
}

/// What a key does.
fn on_key(k: KeyEvent, ui: &mut Ui) -> bool {
    if k.kind != KeyEventKind::Press {
        return true;
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return false,
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return false,
        KeyCode::Char('s') => ui.sort = ui.sort.next(),
        KeyCode::Char('p') => ui.paused = !ui.paused,
        KeyCode::Char('i') => ui.hide_idle = !ui.hide_idle,
        KeyCode::Tab => ui.screen = ui.screen.next(),
        KeyCode::Char('1') => ui.screen = Screen::Overview,
        KeyCode::Char('2') => ui.screen = Screen::Cluster,
        KeyCode::Char('3') => ui.screen = Screen::TablesPv,
        _ => {}
    }
    true
}

/// The full-screen loop; the terminal is restored however it ends.
pub async fn interactive(client: &Client, interval: Duration) -> Result<(), TopError> {
    let mut terminal = ratatui::try_init()?;
    let result = run_screen(&mut terminal, client, interval).await;
    ratatui::restore();
    result
}

async fn run_screen(terminal: &mut ratatui::DefaultTerminal, client: &Client, interval: Duration) -> Result<(), TopError> {
    // crossterm's reader blocks: give it a thread, forward keys
    let (tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if let Event::Key(k) = ev {
                if tx.send(k).is_err() {
                    return;
                }
            }
        }
    });
    let mut ui = Ui::default();
    let mut prev: Option<Sample> = None;
    let mut view: Option<View> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !ui.paused {
                    match gather(client).await {
                        Ok(s) => {
                            view = Some(View::between(prev.as_ref(), &s));
                            prev = Some(s);
                            ui.error = None;
                        }
                        Err(e) => ui.error = Some(e.to_string()),
                    }
                }
            }
            k = keys.recv() => match k {
                Some(k) => if !on_key(k, &mut ui) { return Ok(()) },
                None => return Ok(()),
            },
        }
        terminal.draw(|f| draw(f, view.as_ref(), &ui))?;
    }
}

/// The cells of a rendered buffer as lines of text (for tests).
pub fn buffer_text(buf: &ratatui::buffer::Buffer) -> String {
    let area: Rect = buf.area;
    let mut s = String::new();
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{GroupSample, NodeInfo, QueueRow, TopicRow};
    use crate::panels::{ClusterNodeRow, ClusterPartitionRow, ClusterView, PvaView, TableRow};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn view() -> View {
        View {
            node: NodeInfo {
                name: "n1".into(),
                id: "abc".into(),
                version: "0.1.0".into(),
                uptime_s: 12.0,
                transports: vec!["tcp://127.0.0.1:7400".into()],
                ..NodeInfo::default()
            },
            connections_open: 3,
            frames_in_rate: Some(1500.0),
            refused: 0,
            http: Some(crate::model::HttpRow { requests: 42, rate: Some(3.0), errors_4xx: 2, errors_5xx: 0, p99_us: Some(1024) }),
            endpoints: vec![
                EndpointRow { route: "log.produce".into(), calls: 10, rate: Some(250.0), errors: 0, p50_us: Some(80), p99_us: Some(900) },
                EndpointRow { route: "weft.ping".into(), calls: 0, rate: Some(0.0), errors: 0, p50_us: None, p99_us: None },
                EndpointRow { route: "log.fetch".into(), calls: 99, rate: Some(1.0), errors: 2, p50_us: Some(10), p99_us: Some(5000) },
            ],
            topics: vec![TopicRow { name: "orders".into(), partitions: 3, records: 1234, rate: Some(42.0), size_bytes: 2048, poisoned: 0 }],
            groups: vec![GroupSample { group: "billing".into(), state: "stable".into(), members: 2, total_lag: 17 }],
            queues: vec![QueueRow { kind: "endpoint".into(), name: "jobs".into(), pending: 5, errors: 1, in_flight: 2, rate: None, state: "running" }],
            cluster: None,
            cluster_error: None,
            tables: vec![],
            pva: None,
        }
    }

    fn cluster_view() -> View {
        let mut v = view();
        v.cluster = Some(ClusterView {
            node_id: 2,
            meta_leader: Some(1),
            nodes_live: 1,
            max_term: 7,
            elections: 3,
            elections_rate: Some(0.5),
            leader_changes_rate: Some(0.0),
            leaderless: 0,
            under_replicated: 1,
            moves: vec![crate::panels::MoveSample { group: 4, from: 3, to: 2, reason: "down".into() }],
            moves_done: 6,
            moves_cancelled: 0,
            nodes: vec![
                ClusterNodeRow {
                    id: 1,
                    roles: "control,data".into(),
                    voter: true,
                    live: true,
                    last_contact_ms: Some(20),
                    meta_leader: true,
                    addr: "tcp://127.0.0.1:7001".into(),
                },
                ClusterNodeRow { id: 3, roles: "data".into(), voter: false, live: false, last_contact_ms: None, meta_leader: false, addr: String::new() },
            ],
            partitions: vec![ClusterPartitionRow {
                topic: "orders".into(),
                partition: 1,
                leader: Some(2),
                replicas: vec![1, 2, 3],
                in_sync: Some(vec![1, 2]),
                high_watermark: Some(777),
                rate: Some(12.0),
                lag: Some(40),
                under_replicated: true,
            }],
            applied_records_rate: Some(120.0),
            applied_bytes_rate: Some(4096.0),
            apply_queued_entries: Some(3),
            apply_queued_bytes: Some(1536),
        });
        v.tables = vec![
            TableRow {
                name: "cfg".into(),
                replicated: true,
                leader: Some(1),
                replicas: vec![1, 2],
                revision: Some(17),
                keys: Some(3),
                bytes: Some(4096),
                rate: Some(5.0),
                watchers: None,
            },
            TableRow {
                name: "local_t".into(),
                replicated: false,
                leader: None,
                replicas: vec![],
                revision: Some(4),
                keys: Some(2),
                bytes: Some(10),
                rate: Some(0.0),
                watchers: Some(1),
            },
        ];
        v.pva = Some(PvaView {
            channels: 3,
            monitors: 2,
            connections: 5,
            updates: 160,
            updates_rate: Some(20.0),
            pvs: vec![crate::panels::PvSample { name: "t:lab:temp".into(), r#type: "epics:nt/NTScalar:1.0".into(), writable: true, display: "21.5".into() }],
            pvs_total: 1,
        });
        v
    }

    fn render(v: Option<&View>, ui: &Ui) -> String {
        let mut t = Terminal::new(TestBackend::new(110, 40)).unwrap();
        t.draw(|f| draw(f, v, ui)).unwrap();
        buffer_text(t.backend().buffer())
    }

    #[test]
    fn every_panel_shows_its_rows() {
        let s = render(Some(&view()), &Ui::default());
        for want in [
            "weft n1",
            "frames in/s 1500",
            "http requests 42",
            "4xx 2",
            "p99 us 1024",
            "endpoints (by calls/s)",
            "log.produce",
            "250",
            "orders",
            "2.0 KiB",
            "billing",
            "stable",
            "17",
            "jobs",
            "running",
            "q quit",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        let produce = s.find("log.produce").unwrap();
        let ping = s.find("weft.ping").unwrap();
        let fetch = s.find("log.fetch").unwrap();
        assert!(produce < ping && produce < fetch, "view order kept under sort by rate");
    }

    #[test]
    fn keys_sort_hide_and_quit() {
        let mut ui = Ui::default();
        let press = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        assert!(on_key(press('s'), &mut ui));
        let s = render(Some(&view()), &ui);
        assert!(s.contains("(by calls)") && s.find("log.fetch").unwrap() < s.find("log.produce").unwrap(), "{s}");
        assert!(on_key(press('i'), &mut ui));
        assert!(!render(Some(&view()), &ui).contains("weft.ping"), "idle endpoints hidden");
        assert!(on_key(press('p'), &mut ui));
        assert!(render(Some(&view()), &ui).contains("(paused)"));
        assert!(on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), &mut ui));
        assert_eq!(ui.screen, Screen::Cluster);
        assert!(on_key(press('3'), &mut ui));
        assert_eq!(ui.screen, Screen::TablesPv);
        assert!(on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), &mut ui));
        assert_eq!(ui.screen, Screen::Overview, "Tab cycles back");
        assert!(!on_key(press('q'), &mut ui));
        assert!(!on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &mut ui));
    }

    fn lines_with<'a>(s: &'a str, word: &str) -> Vec<&'a str> {
        s.lines().filter(|l| l.contains(word)).collect()
    }

    #[test]
    fn cluster_screen_shows_nodes_leaders_and_partitions() {
        let v = cluster_view();
        let ui = Ui { screen: Screen::Cluster, ..Ui::default() };
        let s = render(Some(&v), &ui);
        for want in [
            "cluster node 2  meta leader 1  up 1/2",
            "under-replicated 1  moves 1",
            "elections 3 (0.5/s)",
            "cluster nodes",
            "control,data",
            "orders/1",
            "777",
            "1,2,3",
            "rebalancer moves (done 6",
            "applier records/s 120  bytes/s 4.0 KiB  queued 3 entries (1.5 KiB)",
            "[cluster]",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        let node1 = lines_with(&s, "tcp://127.0.0.1:7001");
        assert!(node1.len() == 1 && node1[0].contains("leader") && node1[0].contains("up"), "{s}");
        assert!(lines_with(&s, "DOWN").len() == 1, "node 3 shown down\n{s}");
        let orders = lines_with(&s, "orders/1");
        assert!(orders[0].contains(" 1,2 ") && orders[0].contains(" 40 "), "in sync and lag: {orders:?}");
        assert!(!s.contains("log.produce"), "the overview's panels are not on the cluster screen");
        // the overview keeps its panels and gets the summary line
        let o = render(Some(&v), &Ui::default());
        assert!(o.contains("log.produce") && o.contains("meta leader 1") && !o.contains("cluster nodes") && !o.contains("applier"), "{o}");
        // a node without `apply`: no applier line, the rest as before
        let mut old = v.clone();
        if let Some(c) = old.cluster.as_mut() {
            (c.applied_records_rate, c.applied_bytes_rate, c.apply_queued_entries, c.apply_queued_bytes) = (None, None, None, None);
        }
        let s = render(Some(&old), &ui);
        assert!(!s.contains("applier") && s.contains("orders/1") && s.contains("cluster nodes"), "{s}");
        assert!(!crate::text::render(&old).contains("applier"));
    }

    #[test]
    fn tables_and_pv_screen() {
        let ui = Ui { screen: Screen::TablesPv, ..Ui::default() };
        let s = render(Some(&cluster_view()), &ui);
        let cfg = lines_with(&s, "cfg");
        assert!(cfg.len() == 1 && cfg[0].contains("replicated") && cfg[0].contains("1 (1,2)") && cfg[0].contains("17") && cfg[0].contains("4.0 KiB"), "{s}");
        assert!(s.find("cfg").unwrap() < s.find("local_t").unwrap(), "view order kept");
        for want in ["pvAccess channels 3", "monitors 2", "updates/s 20.0", "t:lab:temp", "21.5", "[tables+pv]"] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
    }

    #[test]
    fn absent_parts_leave_empty_panels() {
        let v = view();
        let s = render(Some(&v), &Ui { screen: Screen::Cluster, ..Ui::default() });
        assert!(s.contains("not in cluster mode") && !s.contains("cluster nodes"), "{s}");
        assert!(!s.contains("meta leader"), "no summary line outside cluster mode");
        let s = render(Some(&v), &Ui { screen: Screen::TablesPv, ..Ui::default() });
        assert!(s.contains("no tables") && s.contains("pvAccess not served"), "{s}");
        let t = crate::text::render(&v);
        assert!(!t.contains("cluster") && !t.contains("TABLE") && !t.contains("pvAccess"), "{t}");
        let t = crate::text::render(&cluster_view());
        for want in ["meta leader 1", "applier records/s 120  bytes/s 4.0 KiB  queued 3 entries (1.5 KiB)", "orders/1", "cfg", "replicated", "t:lab:temp", "pvAccess channels 3"] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
    }

    #[test]
    fn errors_and_the_empty_start_are_shown() {
        let ui = Ui { error: Some("connection refused".into()), ..Ui::default() };
        assert!(render(None, &ui).contains("connection refused"));
        assert!(render(None, &Ui::default()).contains("waiting for the first sample"));
        assert!(render(Some(&view()), &ui).contains("! connection refused"));
        // a tiny terminal must not panic
        let mut t = Terminal::new(TestBackend::new(10, 3)).unwrap();
        t.draw(|f| draw(f, Some(&view()), &Ui::default())).unwrap();
        for screen in [Screen::Cluster, Screen::TablesPv] {
            t.draw(|f| draw(f, Some(&cluster_view()), &Ui { screen, ..Ui::default() })).unwrap();
        }
    }
}
