// The managers' dashboard. Asks for a token (kept in sessionStorage, sent only in the Authorization header,
// never in a URL), calls the service's report endpoints with it and draws what they answer. The token's
// payload is decoded here for display only (role, company); the service decides what the token may see.
//
// Money is exact: amounts arrive as decimal strings and are added and subtracted as integer cents (BigInt);
// the data-* attributes carry the exact decimal strings, the text is formatted for people.
'use strict';

(function () {
  const TOKEN_KEY = 'wallet-dashboard.token';
  const COMPANY_KEY = 'wallet-dashboard.company';
  const PERIOD_KEY = 'wallet-dashboard.period';
  // What the page shows at most: the latest transactions (the API allows up to 100), top spenders, and
  // budget bars before "Show all".
  const LATEST_TRANSACTIONS = 20;
  const TOP_SPENDERS = 10;
  const BUDGETS_SHOWN = 12;
  // Until every service reports its configured thresholds, the contract's defaults.
  const DEFAULT_THRESHOLDS = [80, 100];
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const DAY_MS = 86400000;
  // The chart's colours per currency, in order of appearance (the first is the page's "spent" blue).
  const SERIES_COLOURS = ['#2f5bd3', '#7a4fd6', '#159a8c', '#d0582b', '#8a8f99'];

  const $ = (sel) => document.querySelector(sel);

  const state = {
    token: null,
    claims: null,
    company: null,
    period: 'week',
    thresholds: DEFAULT_THRESHOLDS,
    currencyOf: new Map(), // wallet_id → currency, learnt from transactions and wallets
    view: null, // what is on screen, for the CSV
    chart: null,
    showAllBudgets: false,
    loadSeq: 0,
  };

  // ---- money ----------------------------------------------------------------------------------------

  /** A decimal string ("-12.5", "100.00") as integer cents; null when it is not one. */
  function cents(text) {
    if (text === null || text === undefined) return null;
    const m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(String(text).trim());
    if (!m) return null;
    const v = BigInt(m[2]) * 100n + BigInt((m[3] || '').padEnd(2, '0'));
    return m[1] ? -v : v;
  }

  /** Integer cents as the decimal string the API would write ("-3.05"). */
  function decimal(c) {
    const neg = c < 0n;
    const a = neg ? -c : c;
    const s = (a / 100n).toString() + '.' + (a % 100n).toString().padStart(2, '0');
    return neg ? '-' + s : s;
  }

  const formatters = new Map();
  /** Cents for people: "$1,234.50", "€80.00"; without a known currency, "1,234.50". */
  function money(c, currency) {
    const key = currency || '';
    if (!formatters.has(key)) {
      let f;
      try {
        f = currency
          ? new Intl.NumberFormat(undefined, { style: 'currency', currency })
          : new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
      } catch (_) {
        f = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
      }
      formatters.set(key, f);
    }
    // Display only: exact up to 2^53 cents, far beyond any amount the ledger holds.
    return formatters.get(key).format(Number(c) / 100);
  }

  // ---- dates ----------------------------------------------------------------------------------------

  const isoDate = (d) => d.toISOString().slice(0, 10);
  const utcToday = () => {
    const n = new Date();
    return new Date(Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), n.getUTCDate()));
  };
  const addDays = (d, n) => new Date(d.getTime() + n * DAY_MS);

  /** The ISO week key of a UTC date: "2026-W49" (the week's Thursday decides its year). */
  function isoWeek(d) {
    const thursday = addDays(d, 3 - ((d.getUTCDay() + 6) % 7));
    const year = thursday.getUTCFullYear();
    const jan1 = new Date(Date.UTC(year, 0, 1));
    const week = 1 + Math.floor((thursday - jan1) / (7 * DAY_MS));
    return year + '-W' + String(week).padStart(2, '0');
  }
  const monthKey = (d) => d.toISOString().slice(0, 7);

  /** The period selector's range (at most 366 days, the API's limit) and every key in it, oldest first. */
  function rangeOf(period) {
    const to = utcToday();
    let from;
    if (period === 'day') {
      from = addDays(to, -30);
    } else if (period === 'week') {
      const monday = addDays(to, -((to.getUTCDay() + 6) % 7));
      from = addDays(monday, -12 * 7);
    } else {
      from = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth() - 11, 1));
    }
    const keyOf = period === 'day' ? isoDate : period === 'week' ? isoWeek : monthKey;
    const keys = [];
    for (let d = from; d <= to; d = addDays(d, 1)) {
      const k = keyOf(d);
      if (keys[keys.length - 1] !== k) keys.push(k);
    }
    return { from: isoDate(from), to: isoDate(to), keys };
  }

  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  /** A period key as an axis label: "6 Dec", "W49", "Dec 2026". */
  function keyLabel(key, period) {
    if (period === 'day') return Number(key.slice(8, 10)) + ' ' + MONTHS[Number(key.slice(5, 7)) - 1];
    if (period === 'week') return 'W' + key.slice(6);
    return MONTHS[Number(key.slice(5, 7)) - 1] + ' ' + key.slice(0, 4);
  }
  function dateLabel(text) {
    if (!text) return '';
    const k = String(text).slice(0, 10);
    return Number(k.slice(8, 10)) + ' ' + MONTHS[Number(k.slice(5, 7)) - 1] + ' ' + k.slice(0, 4);
  }
  function timeLabel(text) {
    const d = new Date(text);
    if (Number.isNaN(d.getTime())) return String(text || '');
    return d.toLocaleString(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  }
  const shortId = (id) => (id ? String(id).slice(0, 8) : '–');

  // ---- the token ------------------------------------------------------------------------------------

  /** The JWT's payload, decoded for display only (the signature is the service's business). */
  function claimsOf(token) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      const bin = atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), '='));
      const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === 'object' ? claims : null;
    } catch (_) {
      return null;
    }
  }

  // ---- the API --------------------------------------------------------------------------------------

  class ApiProblem extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The words for a failed call: the problem's own `detail`/`title`, or what the status means. */
  function problemText(status, body) {
    if (status === 401) {
      return 'Your token was refused: it may have expired, or it was not issued for this service. Sign in again with a new one.';
    }
    const said = body && (body.detail || body.title);
    if (status === 403) return said || 'Your token may not see these figures: the dashboard is for managers and admins.';
    if (status === 404) return said || 'Nothing found for this company, or your token may not see it.';
    if (status === 429) return 'Too many requests right now. Wait a moment and press Refresh.';
    if (status >= 500) return (body && body.title) || 'The service could not answer just now. Try Refresh in a moment.';
    return said || 'The service answered ' + status + '.';
  }

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
    }
    let res;
    try {
      res = await fetch(url, {
        headers: { Authorization: 'Bearer ' + state.token, Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (_) {
      throw new ApiProblem(0, 'The service could not be reached. Check your connection and press Refresh.');
    }
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) throw new ApiProblem(res.status, problemText(res.status, body));
    if (!body || typeof body !== 'object') throw new ApiProblem(res.status, 'The service answered something that is not a report.');
    return body;
  }

  // ---- DOM helpers ----------------------------------------------------------------------------------

  /** An element with text and attributes; `data` becomes data-* attributes. No HTML is ever parsed. */
  function el(tag, opts, ...children) {
    const e = document.createElement(tag);
    const o = opts || {};
    if (o.cls) e.className = o.cls;
    if (o.text !== undefined) e.textContent = o.text;
    if (o.title) e.title = o.title;
    if (o.data) for (const [k, v] of Object.entries(o.data)) if (v !== undefined && v !== null) e.dataset[k] = String(v);
    if (o.attrs) for (const [k, v] of Object.entries(o.attrs)) e.setAttribute(k, v);
    for (const c of children) if (c) e.append(c);
    return e;
  }

  function showError(message, kind) {
    const box = $('#error');
    if (!message) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    box.className = 'alert' + (kind === 'info' ? ' info' : '');
    box.textContent = message;
    box.hidden = false;
  }

  function sectionError(card, message) {
    const p = card.querySelector('.section-error');
    p.textContent = message || '';
    p.hidden = !message;
  }

  /** Shows the section's "nothing here" line, or its table when there are rows to show. */
  function setEmpty(card, empty, noData) {
    const p = card.querySelector('.empty');
    if (p) p.hidden = !empty;
    const table = card.querySelector('.table-wrap');
    if (table) table.hidden = Boolean(empty || noData);
  }

  // ---- sign in / out --------------------------------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.claims = null;
    state.view = null;
    $('#board').hidden = true;
    $('#session').hidden = true;
    $('#login').hidden = false;
    $('#token').value = '';
    $('#company-label').textContent = 'Wallet & Budget Service';
    showError(message || null);
  }

  /** Takes a token: checks its shape and role for display, keeps it for this tab, opens the board. */
  function useToken(token, fromStorage) {
    const claims = claimsOf(token);
    if (!claims) {
      showError('That does not look like an access token: a JWT is three parts separated by dots.');
      if (fromStorage) sessionStorage.removeItem(TOKEN_KEY);
      return false;
    }
    const role = String(claims.role || '');
    if (role !== 'manager' && role !== 'admin') {
      showError(
        'This dashboard is for travel managers and administrators; this token is for a ' + (role || 'caller without a role') + '.',
      );
      if (fromStorage) sessionStorage.removeItem(TOKEN_KEY);
      return false;
    }
    if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()) {
      showError('This token expired on ' + new Date(claims.exp * 1000).toLocaleString() + '. Sign in with a new one.');
      if (fromStorage) sessionStorage.removeItem(TOKEN_KEY);
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.token = token;
    state.claims = claims;
    showError(null);
    $('#login').hidden = true;
    $('#board').hidden = false;
    $('#session').hidden = false;
    $('#who').textContent = (role === 'admin' ? 'Admin' : 'Manager') + ' · ' + shortId(claims.sub);
    $('#who').title = String(claims.sub || '');
    const admin = role === 'admin';
    $('#company-field').hidden = !admin;
    if (admin) {
      state.company = sessionStorage.getItem(COMPANY_KEY) || '';
      $('#company').value = state.company;
    } else {
      state.company = String(claims.company_id || '');
    }
    load();
    return true;
  }

  // ---- loading --------------------------------------------------------------------------------------

  async function load() {
    const seq = ++state.loadSeq;
    const company = state.company;
    const period = state.period;
    const range = rangeOf(period);
    $('#company-label').textContent = company ? 'Company ' + company : 'No company chosen';
    if (!UUID_RE.test(company)) {
      $('#board').classList.remove('loading');
      showError(
        state.claims && state.claims.role === 'admin'
          ? 'Enter the ID of the company whose figures you want to see (a UUID).'
          : 'Your token names no company (its company_id is missing or not a UUID).',
        'info',
      );
      clearBoard();
      return;
    }
    showError(null);
    $('#board').classList.add('loading');
    $('#refresh').disabled = true;
    const today = isoDate(utcToday());
    const results = await Promise.allSettled([
      api('/reports/budgets', { company_id: company, as_of: today }),
      api('/reports/spend', { company_id: company, from: range.from, to: range.to, group_by: period }),
      api('/reports/spend', { company_id: company, from: range.from, to: range.to, group_by: 'user' }),
      api('/reports/transactions', { company_id: company, limit: LATEST_TRANSACTIONS }),
      api('/reports/wallets', { company_id: company, status: 'FROZEN,CLOSED' }),
    ]);
    if (seq !== state.loadSeq) return; // a newer load (period or company changed) owns the screen
    $('#board').classList.remove('loading');
    $('#refresh').disabled = false;
    if (results.some((r) => r.status === 'rejected' && r.reason && r.reason.status === 401)) {
      signOut(problemText(401, null));
      return;
    }
    const [budgets, spend, users, txns, wallets] = results.map((r) => (r.status === 'fulfilled' ? r.value : null));
    const errorOf = (i) => (results[i].status === 'rejected' ? String(results[i].reason.message || results[i].reason) : null);
    const all = results.every((r) => r.status === 'rejected');
    if (all) showError(errorOf(0));

    state.currencyOf = new Map();
    for (const r of (txns && txns.rows) || []) state.currencyOf.set(r.wallet_id, r.currency);
    for (const r of (wallets && wallets.rows) || []) state.currencyOf.set(r.wallet_id, r.currency);
    state.thresholds =
      budgets && Array.isArray(budgets.alert_thresholds) && budgets.alert_thresholds.length
        ? budgets.alert_thresholds.map(Number).filter((n) => Number.isFinite(n) && n > 0).sort((a, b) => a - b)
        : DEFAULT_THRESHOLDS;

    state.view = {
      company,
      period,
      range,
      asOf: (budgets && budgets.as_of) || today,
      budgets: budgets ? budgetRows(budgets.rows || []) : null,
      spend: spend ? spendSeries(spend, range, period) : null,
      spenders: users ? topSpenders(users.rows || []) : null,
      txns: txns ? txnRows(txns.rows || []) : null,
      wallets: wallets ? (wallets.rows || []) : null,
    };
    const v = state.view;
    $('#range').textContent =
      'Spend from ' + dateLabel(range.from) + ' to ' + dateLabel(range.to) + ' (UTC) · budgets as of ' + dateLabel(v.asOf);
    renderKpis(v, users, errorOf);
    renderSpend(v.spend, errorOf(1));
    renderSpenders(v.spenders, errorOf(2));
    renderBudgets(v.budgets, errorOf(0));
    renderTxns(v.txns, errorOf(3));
    renderWallets(v.wallets, errorOf(4));
    document.body.dataset.loaded = String(seq);
  }

  function clearBoard() {
    state.view = null;
    for (const id of ['#spenders', '#txns', '#wallets']) $(id + ' tbody').replaceChildren();
    $('#budgets').replaceChildren();
    if (state.chart) {
      state.chart.destroy();
      state.chart = null;
    }
    for (const k of document.querySelectorAll('.kpi .kpi-value')) k.textContent = '–';
  }

  // ---- shaping --------------------------------------------------------------------------------------

  function budgetRows(rows) {
    return rows.map((r) => {
      const total = cents(r.total_amount) ?? 0n;
      const used = cents(r.used_amount) ?? 0n; // includes what is held
      const held = cents(r.held_amount) ?? 0n;
      const spent = used - held;
      const left = total - used > 0n ? total - used : 0n;
      return { ...r, total, used, held, spent, left, currency: r.currency || state.currencyOf.get(r.wallet_id) || null };
    });
  }

  /** Per currency, debits less refunds per period key (0 where the report has no row). */
  function spendSeries(report, range, period) {
    const byCurrency = new Map();
    for (const r of report.rows || []) {
      const c = r.currency || '';
      if (!byCurrency.has(c)) byCurrency.set(c, new Map());
      byCurrency.get(c).set(r.key, r);
    }
    const keys = range.keys.slice();
    // A key the report has that the page did not expect (clock skew at midnight) is still shown.
    for (const m of byCurrency.values()) for (const k of m.keys()) if (!keys.includes(k)) keys.push(k);
    keys.sort();
    const series = [...byCurrency.entries()].map(([currency, m]) => ({
      currency,
      values: keys.map((k) => {
        const r = m.get(k);
        return r ? (cents(r.debits) ?? 0n) - (cents(r.refunds) ?? 0n) : 0n;
      }),
      rows: keys.map((k) => m.get(k) || null),
    }));
    const totals = (report.totals || []).map((t) => ({
      currency: t.currency,
      spent: (cents(t.debits) ?? 0n) - (cents(t.refunds) ?? 0n),
      count: Number(t.count) || 0,
      raw: t,
    }));
    return { groupBy: period, keys, series, totals };
  }

  function topSpenders(rows) {
    return rows
      .map((r) => ({ ...r, spent: (cents(r.debits) ?? 0n) - (cents(r.refunds) ?? 0n) }))
      .filter((r) => r.spent > 0n)
      .sort((a, b) => (a.spent === b.spent ? 0 : a.spent > b.spent ? -1 : 1))
      .slice(0, TOP_SPENDERS);
  }

  function txnRows(rows) {
    return rows.slice(0, LATEST_TRANSACTIONS);
  }

  // ---- rendering ------------------------------------------------------------------------------------

  function setKpi(id, valueNodes, note, alerting) {
    const k = $(id);
    k.querySelector('.kpi-value').replaceChildren(...valueNodes);
    k.querySelector('.kpi-note').textContent = note;
    k.classList.toggle('alerting', Boolean(alerting));
  }

  function renderKpis(v, users, errorOf) {
    if (v.spend) {
      const totals = v.spend.totals.filter((t) => t.spent !== 0n || t.count > 0);
      const nodes = totals.length
        ? totals.map((t, i) => (i === 0 ? document.createTextNode(money(t.spent, t.currency)) : el('small', { text: money(t.spent, t.currency) })))
        : [document.createTextNode(money(0n, null))];
      setKpi('#kpi-spent', nodes, 'debits less refunds');
      const count = v.spend.totals.reduce((n, t) => n + t.count, 0);
      const travellers = users ? (users.rows || []).filter((r) => Number(r.count) > 0).length : null;
      setKpi('#kpi-count', [document.createTextNode(count.toLocaleString())], travellers === null ? '' : travellers + ' travellers');
    } else {
      setKpi('#kpi-spent', [document.createTextNode('–')], errorOf(1) ? 'not available' : '');
      setKpi('#kpi-count', [document.createTextNode('–')], '');
    }
    if (v.budgets) {
      const lowest = state.thresholds[0];
      const near = v.budgets.filter((b) => Number(b.utilisation_percent) >= lowest).length;
      setKpi('#kpi-budgets', [document.createTextNode(near + ' of ' + v.budgets.length)], 'at or above ' + lowest + '% used', near > 0);
    } else {
      setKpi('#kpi-budgets', [document.createTextNode('–')], 'not available');
    }
    if (v.wallets) {
      const frozen = v.wallets.filter((w) => w.status === 'FROZEN').length;
      setKpi(
        '#kpi-wallets',
        [document.createTextNode(String(v.wallets.length))],
        frozen + ' frozen · ' + (v.wallets.length - frozen) + ' closed',
        frozen > 0,
      );
    } else {
      setKpi('#kpi-wallets', [document.createTextNode('–')], 'not available');
    }
  }

  function renderSpend(spend, error) {
    const card = $('#spend-card');
    sectionError(card, error);
    const box = $('#spend-chart-box');
    if (!spend) {
      box.hidden = true;
      setEmpty(card, false);
      box.dataset.series = '';
      return;
    }
    const names = { day: 'per day', week: 'per ISO week', month: 'per month' };
    $('#spend-sub').textContent = 'debits less refunds, ' + names[spend.groupBy];
    // What the chart draws, exactly, for whoever reads the page (and the browser test).
    box.dataset.groupBy = spend.groupBy;
    box.dataset.series = JSON.stringify({
      group_by: spend.groupBy,
      keys: spend.keys,
      series: spend.series.map((s) => ({ currency: s.currency, values: s.values.map(decimal) })),
    });
    const empty = spend.series.every((s) => s.values.every((x) => x === 0n));
    setEmpty(card, empty);
    box.hidden = false;
    const data = {
      labels: spend.keys.map((k) => keyLabel(k, spend.groupBy)),
      datasets: spend.series.map((s, i) => ({
        label: 'Spent (' + (s.currency || '?') + ')',
        data: s.values.map((x) => Number(x) / 100),
        backgroundColor: SERIES_COLOURS[i % SERIES_COLOURS.length],
        borderRadius: 3,
        maxBarThickness: 42,
      })),
    };
    if (typeof window.Chart !== 'function') {
      sectionError(card, 'The chart library did not load; the figures are in the CSV download.');
      return;
    }
    const currencyOf = (i) => spend.series[i] && spend.series[i].currency;
    const options = {
      responsive: true,
      maintainAspectRatio: false,
      animation: { duration: 250 },
      interaction: { mode: 'index', intersect: false },
      plugins: {
        legend: { display: spend.series.length > 1, position: 'bottom' },
        tooltip: {
          callbacks: {
            title: (items) => (items.length ? spend.keys[items[0].dataIndex] : ''),
            label: (item) => {
              const s = spend.series[item.datasetIndex];
              const r = s.rows[item.dataIndex];
              const line = 'Spent ' + money(s.values[item.dataIndex], s.currency);
              return r ? line + ' (' + r.count + ' txns, refunds ' + money(cents(r.refunds) ?? 0n, s.currency) + ')' : line;
            },
          },
        },
      },
      scales: {
        x: { grid: { display: false }, ticks: { autoSkip: true, maxRotation: 0 } },
        y: {
          beginAtZero: true,
          grid: { color: '#eef1f6' },
          ticks: {
            maxTicksLimit: 6,
            callback: (value) => {
              // One currency: its symbol; several share the axis, so plain numbers.
              const c = spend.series.length === 1 ? currencyOf(0) : null;
              try {
                return new Intl.NumberFormat(undefined, c ? { style: 'currency', currency: c, notation: 'compact' } : { notation: 'compact' }).format(value);
              } catch (_) {
                return String(value);
              }
            },
          },
        },
      },
    };
    if (state.chart) {
      state.chart.data = data;
      state.chart.options = options;
      state.chart.update();
    } else {
      state.chart = new window.Chart($('#spend-chart'), { type: 'bar', data, options });
    }
  }

  function travellerCell(userId, optional) {
    return el('td', { cls: optional ? 'id opt' : 'id', text: shortId(userId), title: userId || '' });
  }

  function renderSpenders(spenders, error) {
    const card = $('#spenders-card');
    sectionError(card, error);
    const body = $('#spenders tbody');
    body.replaceChildren();
    if (!spenders) return setEmpty(card, false, true);
    setEmpty(card, spenders.length === 0);
    spenders.forEach((r, i) => {
      body.append(
        el(
          'tr',
          { data: { userId: r.key, currency: r.currency, spent: decimal(r.spent), count: r.count } },
          el('td', { cls: 'rank', text: String(i + 1) }),
          travellerCell(r.key),
          el('td', { cls: 'num', text: money(r.spent, r.currency) }),
          el('td', { cls: 'num opt', text: String(r.count) }),
        ),
      );
    });
  }

  function renderBudgets(budgets, error) {
    const card = $('#budgets-card');
    sectionError(card, error);
    const list = $('#budgets');
    list.replaceChildren();
    const more = $('#budgets-more');
    $('#threshold-legend').textContent = 'Alerts at ' + state.thresholds.map((t) => t + '%').join(', ');
    if (!budgets) {
      more.hidden = true;
      return setEmpty(card, false);
    }
    setEmpty(card, budgets.length === 0);
    const shown = state.showAllBudgets ? budgets : budgets.slice(0, BUDGETS_SHOWN);
    for (const b of shown) list.append(budgetItem(b));
    more.hidden = budgets.length <= BUDGETS_SHOWN;
    more.textContent = state.showAllBudgets ? 'Show the ' + BUDGETS_SHOWN + ' most used' : 'Show all ' + budgets.length + ' budgets';
  }

  function budgetItem(b) {
    const pct = Number(b.utilisation_percent);
    const lowest = state.thresholds[0];
    const highest = state.thresholds[state.thresholds.length - 1];
    // The bar's full width is the total, or what was used when that is more (never clipped).
    const scale = b.used > b.total ? b.used : b.total;
    const share = (c) => (scale > 0n ? Number((c * 10000n) / scale) / 100 : 0);
    const fill = el('div', { cls: 'fill' });
    const spentSeg = el('span', { cls: 'seg spent' });
    spentSeg.style.width = share(b.spent > 0n ? b.spent : 0n) + '%';
    const heldSeg = el('span', { cls: 'seg held' });
    heldSeg.style.width = share(b.held) + '%';
    fill.append(spentSeg, heldSeg);
    const bar = el('div', {
      cls: 'bar',
      attrs: {
        role: 'img',
        'aria-label':
          'Spent ' + money(b.spent, b.currency) + ', held ' + money(b.held, b.currency) + ' of ' + money(b.total, b.currency),
      },
    }, fill);
    state.thresholds.forEach((t, i) => {
      const at = b.total > 0n && scale > 0n ? Number((b.total * BigInt(Math.round(t * 100))) / scale) / 100 : t;
      const mark = el('span', { cls: 'mark' + (i === state.thresholds.length - 1 && at >= 95 ? ' last' : ''), data: { threshold: t } },
        el('span', { text: t + '%' }));
      mark.style.left = Math.min(at, 100) + '%';
      bar.append(mark);
    });
    const pctClass = pct >= highest ? 'pct over' : pct >= lowest ? 'pct warn' : 'pct';
    const periodText =
      (b.period_type ? b.period_type.charAt(0) + b.period_type.slice(1).toLowerCase() : '') +
      ' · ' + dateLabel(b.start_date) + (b.end_date ? ' – ' + dateLabel(b.end_date) : '');
    return el(
      'li',
      {
        cls: 'budget status-' + (b.status || ''),
        data: {
          budgetId: b.budget_id,
          walletId: b.wallet_id,
          userId: b.user_id,
          total: decimal(b.total),
          used: decimal(b.used),
          held: decimal(b.held),
          spent: decimal(b.spent),
          left: decimal(b.left),
          utilisation: b.utilisation_percent,
          status: b.status,
        },
      },
      el(
        'div',
        { cls: 'budget-head' },
        el('span', { cls: 'who', text: 'Traveller ' + shortId(b.user_id), title: b.user_id }),
        el('span', { cls: 'period', text: periodText }),
        b.status && b.status !== 'ACTIVE' ? el('span', { cls: 'badge', text: b.status }) : null,
        el('span', { cls: pctClass, text: (Number.isFinite(pct) ? Math.round(pct) : '?') + '%' }),
      ),
      bar,
      el(
        'div',
        { cls: 'budget-figures' },
        el('span', {}, el('i', { cls: 'seg spent' }), document.createTextNode('Spent ' + money(b.spent, b.currency))),
        el('span', {}, el('i', { cls: 'seg held' }), document.createTextNode('Held ' + money(b.held, b.currency))),
        el('span', { text: 'Left ' + money(b.left, b.currency) }),
        el('span', { cls: 'total', text: 'of ' + money(b.total, b.currency) }),
      ),
    );
  }

  function renderTxns(rows, error) {
    const card = $('#txns-card');
    sectionError(card, error);
    const body = $('#txns tbody');
    body.replaceChildren();
    if (!rows) return setEmpty(card, false, true);
    setEmpty(card, rows.length === 0);
    $('#txns-sub').textContent = rows.length ? 'newest first' : '';
    // A credit carrying the reference of a debit of the same wallet is a refund (the spend report's rule);
    // only debits on screen are known here, so an older one's refund shows as a credit.
    const refKey = (t) => t.wallet_id + '|' + t.reference_type + '|' + t.reference_id;
    const debited = new Set(rows.filter((t) => t.type === 'DEBIT' && t.reference_id).map(refKey));
    for (const t of rows) {
      const outgoing = t.type === 'DEBIT' || t.type === 'TRANSFER_OUT';
      const kind = t.type === 'CREDIT' && t.reference_id && debited.has(refKey(t)) ? 'REFUND' : t.type;
      const amount = cents(t.amount) ?? 0n;
      body.append(
        el(
          'tr',
          { data: { txnId: t.txn_id, walletId: t.wallet_id, type: t.type, shownAs: kind, amount: t.amount, currency: t.currency, status: t.status } },
          el('td', { cls: 'when', text: timeLabel(t.created_at), title: t.created_at }),
          travellerCell(t.user_id, true),
          el('td', { cls: 'desc opt', text: t.description || t.reference_id || '', title: t.description || '' }),
          el('td', {}, el('span', { cls: 'badge ' + kind, text: kind.replace('_', ' ').toLowerCase() })),
          el('td', { cls: 'num ' + (outgoing ? 'amount-debit' : 'amount-credit'), text: (outgoing ? '−' : '+') + money(amount, t.currency) }),
          el('td', { cls: 'opt', text: (t.status || '').toLowerCase() }),
        ),
      );
    }
  }

  function renderWallets(rows, error) {
    const card = $('#wallets-card');
    sectionError(card, error);
    const body = $('#wallets tbody');
    body.replaceChildren();
    if (!rows) return setEmpty(card, false, true);
    setEmpty(card, rows.length === 0);
    for (const w of rows) {
      body.append(
        el(
          'tr',
          { data: { walletId: w.wallet_id, userId: w.user_id, status: w.status, balance: w.balance, currency: w.currency } },
          travellerCell(w.user_id),
          el('td', {}, el('span', { cls: 'badge ' + w.status, text: w.status.toLowerCase() })),
          el('td', { cls: 'num', text: money(cents(w.balance) ?? 0n, w.currency) }),
          el('td', { cls: 'when opt', text: dateLabel(w.updated_at) }),
        ),
      );
    }
  }

  // ---- CSV ------------------------------------------------------------------------------------------

  /** A CSV field: quoted when needed; text a spreadsheet would run as a formula is defused. */
  function field(v, text) {
    let s = v === null || v === undefined ? '' : String(v);
    if (text && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  const line = (values, textCols) => values.map((v, i) => field(v, textCols && textCols.includes(i))).join(',');

  /** What is on screen as one CSV: a block per section (a title line, a header row, its rows). */
  function csvOf(v) {
    const out = [];
    const block = (title, header, rows, textCols) => {
      if (out.length) out.push('');
      out.push(field(title));
      out.push(line(header));
      for (const r of rows) out.push(line(r, textCols));
    };
    block('Company ' + v.company, ['company_id', 'spend_from', 'spend_to', 'group_by', 'budgets_as_of'], [
      [v.company, v.range.from, v.range.to, v.period, v.asOf],
    ]);
    if (v.spend) {
      const rows = [];
      for (const s of v.spend.series) {
        v.spend.keys.forEach((k, i) => {
          const r = s.rows[i];
          rows.push([k, s.currency, decimal(s.values[i]), r ? r.debits : '0.00', r ? r.refunds : '0.00', r ? r.credits : '0.00', r ? r.net : '0.00', r ? r.count : 0]);
        });
      }
      block('Spend per ' + v.period, ['period', 'currency', 'spent', 'debits', 'refunds', 'credits', 'net', 'count'], rows);
    }
    if (v.spenders) {
      block(
        'Top spenders',
        ['rank', 'user_id', 'currency', 'spent', 'debits', 'refunds', 'count'],
        v.spenders.map((r, i) => [i + 1, r.key, r.currency, decimal(r.spent), r.debits, r.refunds, r.count]),
      );
    }
    if (v.budgets) {
      block(
        'Budgets as of ' + v.asOf,
        ['budget_id', 'wallet_id', 'user_id', 'period_type', 'start_date', 'end_date', 'total_amount', 'spent_amount', 'held_amount', 'used_amount', 'left_amount', 'utilisation_percent', 'status'],
        v.budgets.map((b) => [b.budget_id, b.wallet_id, b.user_id, b.period_type, b.start_date, b.end_date, decimal(b.total), decimal(b.spent), decimal(b.held), decimal(b.used), decimal(b.left), b.utilisation_percent, b.status]),
      );
    }
    if (v.txns) {
      block(
        'Latest transactions',
        ['txn_id', 'created_at', 'wallet_id', 'user_id', 'type', 'amount', 'currency', 'status', 'description', 'reference_id'],
        v.txns.map((t) => [t.txn_id, t.created_at, t.wallet_id, t.user_id, t.type, t.amount, t.currency, t.status, t.description, t.reference_id]),
        [8, 9],
      );
    }
    if (v.wallets) {
      block(
        'Frozen and closed wallets',
        ['wallet_id', 'user_id', 'status', 'balance', 'currency', 'updated_at'],
        v.wallets.map((w) => [w.wallet_id, w.user_id, w.status, w.balance, w.currency, w.updated_at]),
      );
    }
    return out.join('\r\n') + '\r\n';
  }

  function download() {
    if (!state.view) {
      showError('There is nothing on screen to download yet.', 'info');
      return;
    }
    const blob = new Blob([csvOf(state.view)], { type: 'text/csv;charset=utf-8' });
    const url = URL.createObjectURL(blob);
    const a = el('a', { attrs: { href: url, download: 'travel-spend-' + state.view.company.slice(0, 8) + '-' + state.view.range.to + '.csv' } });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- wiring ---------------------------------------------------------------------------------------

  function start() {
    const saved = sessionStorage.getItem(PERIOD_KEY);
    if (saved === 'day' || saved === 'week' || saved === 'month') state.period = saved;
    $('#period').value = state.period;

    $('#login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      useToken($('#token').value.trim().replace(/^Bearer\s+/i, ''), false);
    });
    $('#sign-out').addEventListener('click', () => signOut(null));
    $('#refresh').addEventListener('click', () => load());
    $('#download').addEventListener('click', download);
    $('#period').addEventListener('change', () => {
      state.period = $('#period').value;
      sessionStorage.setItem(PERIOD_KEY, state.period);
      load();
    });
    $('#company').addEventListener('change', () => {
      state.company = $('#company').value.trim();
      sessionStorage.setItem(COMPANY_KEY, state.company);
      load();
    });
    // Enter in the company field applies it too (the field is not in a form, so nothing else would).
    $('#company').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') $('#company').blur();
    });
    $('#budgets-more').addEventListener('click', () => {
      state.showAllBudgets = !state.showAllBudgets;
      if (state.view) renderBudgets(state.view.budgets, null);
    });

    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token || !useToken(token, true)) {
      $('#login').hidden = false;
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
