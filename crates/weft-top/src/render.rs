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

#[derive(Debug, Clone, Default)]
pub struct Ui {
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
    format!(
        "http requests {}   /s {}   4xx {}   5xx {}   p99 us {}",
        h.requests,
        per_sec(h.rate),
        h.errors_4xx,
        h.errors_5xx,
        opt(h.p99_us)
    )
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
    let mut endpoints = v.endpoints.clone();
    if ui.hide_idle {
        endpoints.retain(|e| e.calls > 0);
    }
    ui.sort.apply(&mut endpoints);
    let small = |n: usize| Constraint::Length(if n == 0 { 0 } else { (n as u16).saturating_add(3).min(12) });
    let [head, eps, tops, grps, ques, foot] = Layout::vertical([
        Constraint::Length(if v.http.is_some() { 3 } else { 2 }),
        Constraint::Min(5),
        small(v.topics.len()),
        small(v.groups.len()),
        small(v.queues.len()),
        Constraint::Length(1),
    ])
    .areas(area);

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
    f.render_widget(Paragraph::new(lines), head);

    let rows = endpoints.iter().map(|e| {
        Row::new(vec![e.route.clone(), e.calls.to_string(), per_sec(e.rate), e.errors.to_string(), opt(e.p50_us), opt(e.p99_us)])
    });
    let t = Table::new(rows, [Constraint::Fill(1), Constraint::Length(10), Constraint::Length(8), Constraint::Length(7), Constraint::Length(9), Constraint::Length(9)])
        .header(Row::new(["ENDPOINT", "CALLS", "/S", "ERRORS", "P50 US", "P99 US"]).style(header_style()))
        .block(Block::bordered().title(format!(" endpoints (by {}) ", ui.sort.label())));
    f.render_widget(t, eps);

    if !v.topics.is_empty() {
        let rows = v.topics.iter().map(|t| {
            let row = Row::new(vec![t.name.clone(), t.partitions.to_string(), t.records.to_string(), per_sec(t.rate), bytes(t.size_bytes)]);
            if t.poisoned > 0 { row.red() } else { row }
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
            Row::new(vec![q.name.clone(), q.kind.clone(), q.pending.to_string(), q.errors.to_string(), q.in_flight.to_string(), per_sec(q.rate), q.state.to_string()])
        });
        let t = Table::new(rows, [Constraint::Fill(1), Constraint::Length(9), Constraint::Length(9), Constraint::Length(8), Constraint::Length(10), Constraint::Length(7), Constraint::Length(15)])
            .header(Row::new(["QUEUE", "KIND", "PENDING", "ERRORS", "IN FLIGHT", "/S", "STATE"]).style(header_style()))
            .block(Block::bordered().title(" queues "));
        f.render_widget(t, ques);
    }
    f.render_widget(Paragraph::new("q quit   s sort   i hide idle endpoints   p pause"), foot);
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
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn view() -> View {
        View {
            node: NodeInfo { name: "n1".into(), id: "abc".into(), version: "0.1.0".into(), uptime_s: 12.0, transports: vec!["tcp://127.0.0.1:7400".into()] },
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
        }
    }

    fn render(v: Option<&View>, ui: &Ui) -> String {
        let mut t = Terminal::new(TestBackend::new(110, 40)).unwrap();
        t.draw(|f| draw(f, v, ui)).unwrap();
        buffer_text(t.backend().buffer())
    }

    #[test]
    fn every_panel_shows_its_rows() {
        let s = render(Some(&view()), &Ui::default());
        for want in ["weft n1", "frames in/s 1500", "http requests 42", "4xx 2", "p99 us 1024", "endpoints (by calls/s)", "log.produce", "250", "orders", "2.0 KiB", "billing", "stable", "17", "jobs", "running", "q quit"] {
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
        assert!(!on_key(press('q'), &mut ui));
        assert!(!on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &mut ui));
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
    }
}
