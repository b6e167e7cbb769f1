// The live feed: one WebSocket to /ui/ws, reconnected with back-off, and a
// short history of every series the charts draw (kept in the browser: the
// node sends only the current state each second).
import { useEffect, useState } from 'react';
import type { Snapshot } from './types';

/** Points kept per series (two minutes at the default 1 s period). */
export const HISTORY = 120;

export type Point = [number, number];

export interface Feed {
  snap: Snapshot | null;
  connected: boolean;
  /** series name -> points ([time_ms, value]), oldest first */
  series: Map<string, Point[]>;
}

function push(series: Map<string, Point[]>, key: string, p: Point) {
  let s = series.get(key);
  if (!s) {
    s = [];
    series.set(key, s);
  }
  s.push(p);
  if (s.length > HISTORY) s.splice(0, s.length - HISTORY);
}

function record(series: Map<string, Point[]>, snap: Snapshot) {
  const t = snap.time_ms;
  for (const topic of snap.topics) {
    if (topic.produce_rate !== null) push(series, `produce:${topic.name}`, [t, topic.produce_rate]);
    if (topic.consume_rate !== null) push(series, `consume:${topic.name}`, [t, topic.consume_rate]);
  }
  for (const g of snap.groups) {
    for (const l of g.lag) push(series, `lag:${g.group}:${l.topic}:${l.partition}`, [t, l.lag]);
  }
  for (const pv of snap.pvs) {
    if (pv.number !== null) push(series, `pv:${pv.name}`, [t, pv.number]);
  }
}

export function wsUrl(path: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

export function useFeed(): Feed {
  const [feed, setFeed] = useState<Feed>({ snap: null, connected: false, series: new Map() });
  useEffect(() => {
    const series = new Map<string, Point[]>();
    let ws: WebSocket | null = null;
    let timer: number | undefined;
    let delay = 500;
    let closed = false;
    const connect = () => {
      ws = new WebSocket(wsUrl('/ui/ws'));
      ws.onopen = () => {
        delay = 500;
        setFeed((f) => ({ ...f, connected: true }));
      };
      ws.onmessage = (ev) => {
        let snap: Snapshot;
        try {
          snap = JSON.parse(ev.data as string) as Snapshot;
        } catch {
          return;
        }
        if (snap.type !== 'snapshot') return;
        record(series, snap);
        setFeed({ snap, connected: true, series });
      };
      ws.onclose = () => {
        setFeed((f) => ({ ...f, connected: false }));
        if (closed) return;
        timer = window.setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10_000);
      };
    };
    connect();
    return () => {
      closed = true;
      window.clearTimeout(timer);
      const w = ws;
      if (w) {
        w.onmessage = null;
        if (w.readyState === WebSocket.CONNECTING) w.onopen = () => w.close();
        else w.close();
      }
    };
  }, []);
  return feed;
}
