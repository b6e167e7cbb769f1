import { useState } from 'react';
import type { ItemView, QueueInfo, Snapshot } from '../types';

async function call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const resp = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data?.message ?? `HTTP ${resp.status}`);
  return data as T;
}

function base(q: QueueInfo): string {
  return `/ui/api/queues/${q.kind}/${encodeURIComponent(q.name)}`;
}

function QueueRow({ q }: { q: QueueInfo }) {
  const [items, setItems] = useState<ItemView[] | null>(null);
  const [msg, setMsg] = useState('');
  const [busy, setBusy] = useState(false);
  const act = async (op: string, body?: unknown) => {
    setBusy(true);
    try {
      const r = await call<{ count?: number }>('POST', `${base(q)}/${op}`, body ?? {});
      setMsg(r.count !== undefined ? `${op}: ${r.count} item${r.count === 1 ? '' : 's'}` : `${op}: done`);
      if (op === 'reprocess' || op === 'clear') setItems(null);
    } catch (e) {
      setMsg(`${op} failed: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  const inspect = async () => {
    try {
      setItems(await call<ItemView[]>('GET', `${base(q)}/errors?n=20`));
      setMsg('');
    } catch (e) {
      setMsg(`inspect failed: ${(e as Error).message}`);
    }
  };
  const paused = q.accepting_paused || q.processing_paused;
  return (
    <>
      <tr data-testid={`queue-${q.name}`}>
        <td><b>{q.name}</b> <span className="muted">{q.kind}</span></td>
        <td className="num" data-testid="q-incoming">{q.incoming}</td>
        <td className="num">{q.in_flight}</td>
        <td className="num" data-testid="q-errors"><span className={q.errors > 0 ? 'bad' : ''}>{q.errors}</span></td>
        <td className="num">{q.processed}</td>
        <td>{paused ? <span className="badge bad">paused{q.accepting_paused && !q.processing_paused ? ' (accepting)' : ''}{q.processing_paused && !q.accepting_paused ? ' (processing)' : ''}</span> : <span className="badge ok">running</span>}</td>
        <td className="actions">
          <button disabled={busy} onClick={inspect} data-testid="q-inspect">Inspect errors</button>
          <button disabled={busy || q.errors === 0} onClick={() => act('reprocess')} data-testid="q-reprocess">Re-process all</button>
          <button disabled={busy || q.errors === 0} onClick={() => act('clear')} data-testid="q-clear">Clear errors</button>
          {paused ? (
            <button disabled={busy} onClick={() => act('resume')} data-testid="q-resume">Resume</button>
          ) : (
            <button disabled={busy} onClick={() => act('pause')} data-testid="q-pause">Pause</button>
          )}
          <span className="muted" data-testid="q-msg">{msg}</span>
        </td>
      </tr>
      {items && (
        <tr>
          <td colSpan={7}>
            {items.length === 0 ? (
              <p className="muted">The error queue is empty.</p>
            ) : (
              <table className="items" data-testid="q-items">
                <thead><tr><th>uid</th><th>attempts</th><th>reason</th><th>request</th><th></th></tr></thead>
                <tbody>
                  {items.map((it) => (
                    <tr key={it.uid}>
                      <td className="mono">{it.uid}</td>
                      <td className="num">{it.attempts}</td>
                      <td>{it.reason}</td>
                      <td className="mono">{JSON.stringify(it.request)}</td>
                      <td><button disabled={busy} onClick={() => act('reprocess', { uid: it.uid })}>Re-process</button></td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </td>
        </tr>
      )}
    </>
  );
}

export function Queues({ snap }: { snap: Snapshot }) {
  return (
    <section className="card wide">
      <h2>Queued endpoints and senders</h2>
      {snap.queues.length === 0 && <p className="muted">This node runs no queued endpoints or senders (queues.produce_endpoint = true adds log.produce_queued).</p>}
      <table data-testid="queues">
        <thead><tr><th>queue</th><th>incoming</th><th>in flight</th><th>errors</th><th>processed</th><th>state</th><th></th></tr></thead>
        <tbody>
          {snap.queues.map((q) => <QueueRow key={`${q.kind}:${q.name}`} q={q} />)}
        </tbody>
      </table>
    </section>
  );
}
