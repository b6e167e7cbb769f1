import { useEffect, useRef, useState } from 'react';
import { wsUrl } from '../feed';
import type { ConsoleAnswer, ErrorBody, KvOut, QueryRecord, QueryResult, Snapshot, TableEvent } from '../types';

/** Queries remembered in the console's history (this browser only). */
const HISTORY_MAX = 20;
const HISTORY_KEY = 'weft.aql.history';
/** Watch events kept on screen. */
const KEEP_EVENTS = 200;

function loadHistory(): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? '[]');
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string').slice(0, HISTORY_MAX) : [];
  } catch {
    return [];
  }
}

function saveHistory(h: string[]) {
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(h));
  } catch {
    // Storage full or disabled: the history just lives as long as the page.
  }
}

/** An AQL name, quoted when it is not a plain identifier. */
function aqlName(n: string): string {
  return /^[A-Za-z_][A-Za-z0-9_-]*$/.test(n) ? n : `"${n.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Every key of a table (keys are never empty, so all are >= x'00'). */
export function rangeAll(table: string): string {
  return `RANGE ${aqlName(table)} FROM x'00' LIMIT 100`;
}

function bytesText(s: string | undefined, hex: string | undefined) {
  if (s !== undefined) return <>{s}</>;
  if (hex !== undefined) return <>{hex} <span className="muted">(hex)</span></>;
  return <span className="muted">—</span>;
}

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

function KvTable({ kvs, history }: { kvs: KvOut[]; history: boolean }) {
  return (
    <table data-testid="aql-kvs">
      <thead><tr><th>key</th><th>value</th><th>version</th><th>created at</th><th>modified at</th>{history && <th></th>}</tr></thead>
      <tbody>
        {kvs.map((kv, i) => (
          <tr key={i} data-testid="aql-row">
            <td className="mono">{bytesText(kv.key, kv.key_hex)}</td>
            <td className="mono value">{bytesText(kv.value, kv.value_hex)}</td>
            <td className="num">{kv.version}</td>
            <td className="num">{kv.create_revision}</td>
            <td className="num">{kv.mod_revision}</td>
            {history && <td>{kv.deleted ? <span className="badge bad">deleted</span> : ''}</td>}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function RecordTable({ records }: { records: QueryRecord[] }) {
  return (
    <table data-testid="aql-records">
      <thead><tr><th>partition</th><th>offset</th><th>time</th><th>key</th><th>value</th></tr></thead>
      <tbody>
        {records.map((r) => (
          <tr key={`${r.partition}:${r.offset}`} data-testid="aql-row">
            <td className="num">{r.partition}</td>
            <td className="num">{r.offset}</td>
            <td className="mono">{new Date(r.timestamp_ms).toISOString().replace('T', ' ').replace('Z', '')}</td>
            <td className="mono">{bytesText(r.key, r.key_hex)}</td>
            <td className="mono value">{bytesText(r.value, r.value_hex)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ResultView({ r }: { r: QueryResult }) {
  return (
    <div className="result">
      <p className="summary" data-testid="aql-summary">
        <b>{r.kind}</b> · revision {r.revision} · {r.count} {r.count === 1 ? 'result' : 'results'}
        {r.more && <> · <span className="bad">more (cut by LIMIT)</span></>}
        {r.succeeded !== undefined && <> · {r.succeeded ? <span className="badge ok">THEN ran</span> : <span className="badge bad">ELSE ran</span>}</>}
        {r.next_offset !== undefined && <> · next offset {r.next_offset}</>}
      </p>
      {r.kvs && (r.kvs.length > 0 ? <KvTable kvs={r.kvs} history={r.kind === 'history'} /> : <p className="muted">No keys.</p>)}
      {r.records && (r.records.length > 0 ? <RecordTable records={r.records} /> : <p className="muted">No records.</p>)}
      {r.tables && (r.tables.length > 0 ? (
        <ul className="plain mono" data-testid="aql-tables">{r.tables.map((t) => <li key={t}>{t}</li>)}</ul>
      ) : <p className="muted">No tables.</p>)}
      {r.ops?.map((op, i) => (
        <div key={i} className="op">
          <h3>operation {i + 1}</h3>
          <ResultView r={op} />
        </div>
      ))}
    </div>
  );
}

/** The error body, with the position of a syntax error shown under its line. */
function ErrorView({ e, status, text }: { e: ErrorBody; status: number; text: string }) {
  const d = (e.details ?? {}) as Record<string, unknown>;
  const line = Number(d.line);
  const column = Number(d.column);
  const where = Number.isInteger(line) && line > 0 && Number.isInteger(column) && column > 0;
  const src = where ? text.split('\n')[line - 1] ?? '' : '';
  const known = new Set(['grpc_code', 'kind', 'line', 'column', 'offset', 'expected', 'status']);
  const rest = Object.entries(d).filter(([k]) => !known.has(k));
  return (
    <div className="error" data-testid="aql-error">
      <p>
        <span className="badge bad" data-testid="aql-error-code">{String(d.grpc_code ?? e.code)}</span>{' '}
        <span className="muted">{status} {e.code}{d.kind ? ` · ${String(d.kind)}` : ''}</span>
      </p>
      <p className="mono" data-testid="aql-error-message">{e.message}</p>
      {where && (
        <pre className="caret" data-testid="aql-error-pos">
          {`line ${line}, column ${column}${d.offset !== undefined ? ` (byte ${String(d.offset)})` : ''}\n`}
          {src}
          {'\n'}
          {/* Columns count characters (code points), as the parser does. */}
          {' '.repeat(Math.max(0, Math.min(column - 1, Array.from(src).length)))}^
          {d.expected ? ` expected ${String(d.expected)}` : ''}
        </pre>
      )}
      {rest.length > 0 && <pre className="json">{JSON.stringify(Object.fromEntries(rest), null, 2)}</pre>}
    </div>
  );
}

type Run =
  | { state: 'idle' }
  | { state: 'running'; text: string }
  | { state: 'done'; text: string; answer: ConsoleAnswer }
  | { state: 'failed'; text: string; message: string };

function Console({ text, setText }: { text: string; setText: (t: string) => void }) {
  const [run, setRun] = useState<Run>({ state: 'idle' });
  const [raw, setRaw] = useState(false);
  const [history, setHistory] = useState<string[]>(loadHistory);
  const area = useRef<HTMLTextAreaElement>(null);

  const execute = async () => {
    const aql = text.trim();
    if (!aql || run.state === 'running') return;
    setRun({ state: 'running', text: aql });
    const h = [aql, ...history.filter((q) => q !== aql)].slice(0, HISTORY_MAX);
    setHistory(h);
    saveHistory(h);
    try {
      const resp = await fetch('/ui/api/query', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ aql }),
      });
      const data = await resp.json();
      // Query errors come back 200 with ok: false; other statuses are the
      // gateway refusing the request itself (auth, body size).
      if (!resp.ok) throw new Error(data?.message ?? `HTTP ${resp.status}`);
      setRun({ state: 'done', text: aql, answer: data as ConsoleAnswer });
    } catch (e) {
      setRun({ state: 'failed', text: aql, message: (e as Error).message });
    }
  };

  let status = '';
  if (run.state === 'running') status = 'running…';
  else if (run.state === 'done') status = `${run.answer.ok ? 'ok' : 'error'} in ${run.answer.elapsed_ms.toFixed(1)} ms`;
  else if (run.state === 'failed') status = `request failed: ${run.message}`;

  return (
    <section className="card wide">
      <h2>AQL console <span className="muted small">Ctrl+Enter runs · docs/aql.md</span></h2>
      <div className="console">
        <div className="editor">
          <textarea
            ref={area}
            data-testid="aql-input"
            spellCheck={false}
            rows={4}
            value={text}
            placeholder="SHOW TABLES"
            onChange={(e) => setText(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
                e.preventDefault();
                void execute();
              }
            }}
          />
          <div className="controls">
            <button data-testid="aql-run" disabled={run.state === 'running' || !text.trim()} onClick={() => void execute()}>Run</button>
            <label>
              <input type="checkbox" data-testid="aql-raw" checked={raw} onChange={(e) => setRaw(e.target.checked)} /> raw JSON
            </label>
            <span className="muted" data-testid="aql-status">{status}</span>
          </div>
        </div>
        <div className="history">
          <h3>History</h3>
          {history.length === 0 && <p className="muted">Queries you run appear here.</p>}
          <ul className="plain" data-testid="aql-history">
            {history.map((q) => (
              <li key={q}>
                <a
                  href="#"
                  className="mono"
                  title="put it back in the editor"
                  onClick={(e) => {
                    e.preventDefault();
                    setText(q);
                    area.current?.focus();
                  }}
                >
                  {q}
                </a>
              </li>
            ))}
          </ul>
        </div>
      </div>
      {run.state === 'failed' && <p className="bad" data-testid="aql-failed">{run.message}</p>}
      {run.state === 'done' && (
        <div data-testid="aql-result" data-ok={String(run.answer.ok)}>
          {raw ? (
            <pre className="json" data-testid="aql-json">{JSON.stringify(run.answer.ok ? run.answer.result : run.answer.error, null, 2)}</pre>
          ) : run.answer.ok ? (
            <ResultView r={run.answer.result} />
          ) : (
            <ErrorView e={run.answer.error} status={run.answer.status} text={run.text} />
          )}
        </div>
      )}
    </section>
  );
}

function Watch({ table, onClose }: { table: string; onClose: () => void }) {
  const [events, setEvents] = useState<TableEvent[]>([]);
  const [status, setStatus] = useState('connecting…');
  useEffect(() => {
    setEvents([]);
    setStatus('connecting…');
    const ws = new WebSocket(wsUrl(`/ui/api/tables/${encodeURIComponent(table)}/watch`));
    let done = false;
    ws.onopen = () => {
      if (!done) setStatus(`watching ${table}`);
    };
    ws.onmessage = (ev) => {
      let msg: TableEvent | { type: 'error'; message: string };
      try {
        msg = JSON.parse(ev.data as string);
      } catch {
        return;
      }
      if (msg.type === 'error') {
        setStatus(`watch ended: ${msg.message}`);
        return;
      }
      const e = msg;
      setEvents((es) => [e, ...es].slice(0, KEEP_EVENTS));
    };
    ws.onclose = () => {
      if (!done) setStatus((s) => (s.startsWith('watch ended') ? s : 'watch closed'));
    };
    return () => {
      done = true;
      // As in the record browser: closing while connecting logs a warning.
      ws.onmessage = null;
      if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close();
      else ws.close();
    };
  }, [table]);
  return (
    <section className="card wide" data-testid="watch">
      <h2>
        Changes of {table} <span className="muted small" data-testid="watch-status">{status}</span>
        <button onClick={onClose} data-testid="watch-stop">Stop</button>
      </h2>
      {events.length === 0 ? (
        <p className="muted">No changes yet; writes to the table appear here as they commit.</p>
      ) : (
        <table data-testid="watch-events">
          <thead><tr><th>revision</th><th>event</th><th>key</th><th>value</th><th>version</th></tr></thead>
          <tbody>
            {events.map((e, i) => (
              <tr key={`${e.revision}:${i}`} data-testid="watch-event">
                <td className="num">{e.revision}</td>
                <td>{e.type === 'put' ? <span className="badge ok">put</span> : <span className="badge bad">delete</span>}</td>
                <td className="mono">{bytesText(e.kv.key, e.kv.key_hex)}</td>
                <td className="mono value">{e.type === 'put' ? bytesText(e.kv.value, e.kv.value_hex) : ''}</td>
                <td className="num">{e.kv.version}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function Tables({ snap }: { snap: Snapshot }) {
  const [text, setText] = useState('SHOW TABLES');
  const [watching, setWatching] = useState<string | null>(null);
  const tables = snap.tables ?? [];
  return (
    <>
      <section className="card wide">
        <h2>Tables</h2>
        {tables.length === 0 ? (
          <p className="muted">No tables on this node yet (CREATE TABLE in the console, or `weft table create NAME`).</p>
        ) : (
          <table data-testid="tables">
            <thead><tr><th>table</th><th>revision</th><th>keys</th><th>size</th><th>compacted to</th><th></th></tr></thead>
            <tbody>
              {tables.map((t) => (
                <tr key={t.name} data-testid={`table-${t.name}`}>
                  <td><b>{t.name}</b></td>
                  <td className="num" data-testid="t-revision">{t.revision}</td>
                  <td className="num" data-testid="t-keys">{t.keys}</td>
                  <td className="num">{fmtBytes(t.bytes)}</td>
                  <td className="num">{t.compact_revision}</td>
                  <td className="actions">
                    <button data-testid="t-query" onClick={() => setText(rangeAll(t.name))}>Query</button>
                    <button data-testid="t-watch" disabled={watching === t.name} onClick={() => setWatching(t.name)}>Watch</button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {snap.tables_omitted > 0 && <p className="muted">and {snap.tables_omitted} more (SHOW TABLES lists them all)</p>}
      </section>
      <Console text={text} setText={setText} />
      {watching && <Watch table={watching} onClose={() => setWatching(null)} />}
    </>
  );
}
