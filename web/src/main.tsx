import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useFeed } from './feed';
import { Overview } from './pages/Overview';
import { Topics } from './pages/Topics';
import { Records } from './pages/Records';
import { Queues } from './pages/Queues';
import { Pvs } from './pages/Pvs';
import { Tables } from './pages/Tables';
import './style.css';

const TABS = [
  ['overview', 'Overview'],
  ['topics', 'Topics'],
  ['records', 'Records'],
  ['queues', 'Queues'],
  ['pvs', 'PVs'],
  ['tables', 'Tables'],
] as const;
type Tab = (typeof TABS)[number][0];

// Pages are paths under /ui/ (the node answers every one with this app).
function tabOf(path: string): Tab {
  const name = path.replace(/^\/ui\/?/, '').split('/')[0];
  return (TABS.find(([t]) => t === name)?.[0] ?? 'overview') as Tab;
}

function App() {
  const feed = useFeed();
  const [tab, setTab] = useState<Tab>(tabOf(location.pathname));
  useEffect(() => {
    const onPop = () => setTab(tabOf(location.pathname));
    window.addEventListener('popstate', onPop);
    return () => window.removeEventListener('popstate', onPop);
  }, []);
  const go = (t: Tab) => {
    history.pushState(null, '', t === 'overview' ? '/ui/' : `/ui/${t}`);
    setTab(t);
  };
  const snap = feed.snap;
  return (
    <>
      <header>
        <span className="brand">Weft</span>
        <nav>
          {TABS.map(([t, label]) => (
            <a
              key={t}
              href={t === 'overview' ? '/ui/' : `/ui/${t}`}
              className={t === tab ? 'active' : ''}
              data-testid={`tab-${t}`}
              onClick={(e) => {
                e.preventDefault();
                go(t);
              }}
            >
              {label}
            </a>
          ))}
        </nav>
        <span className={`conn ${feed.connected ? 'ok' : 'down'}`} data-testid="conn">
          {feed.connected ? 'live' : 'connecting…'}
        </span>
        {snap && <span className="node">{snap.node.name} · v{snap.node.version}</span>}
      </header>
      <main data-testid={`page-${tab}`}>
        {!snap && tab !== 'records' ? (
          <p className="muted">Waiting for the first snapshot…</p>
        ) : (
          <>
            {tab === 'overview' && snap && <Overview snap={snap} />}
            {tab === 'topics' && snap && <Topics snap={snap} series={feed.series} />}
            {tab === 'records' && <Records snap={snap} />}
            {tab === 'queues' && snap && <Queues snap={snap} />}
            {tab === 'pvs' && snap && <Pvs snap={snap} series={feed.series} />}
            {tab === 'tables' && snap && <Tables snap={snap} />}
          </>
        )}
      </main>
    </>
  );
}

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
