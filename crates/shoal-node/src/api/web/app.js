// shoal's browser page: plain JavaScript, no dependencies. Everything shown
// comes from the node's read API. Text from the network (directory titles)
// is only ever set with textContent, never parsed as HTML.
'use strict';

const REFRESH_MS = 2000;

const $ = (id) => document.getElementById(id);

/** Builds an element; string children become text nodes. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function short(id) {
  return id.length > 20 ? `${id.slice(0, 10)}…${id.slice(-6)}` : id;
}

function setConn(ok, text) {
  const c = $('conn');
  c.textContent = text;
  c.className = ok ? 'badge ok' : 'badge bad';
}

function replaceList(list, items, emptyId) {
  list.replaceChildren(...items);
  $(emptyId).hidden = items.length > 0;
}

function renderStatus(s) {
  $('peer-id').textContent = s.peer_id;
  $('peer-id').title = s.listen_addrs.join('\n');
  $('uptime').textContent = fmtAge(s.uptime_s * 1000);
  $('peer-count').textContent = String(s.peers);
  const c = s.counters;
  $('segments').textContent =
    `${c.segments_complete} complete, ${c.segments_skipped} skipped, ${c.segments_published} published`;
  const sources = Object.keys(s.received_from || {}).length;
  $('received').textContent = `${fmtBytes(c.block_bytes_received)} from ${sources} peer${sources === 1 ? '' : 's'}`;
  $('stored').textContent = fmtBytes(c.stored_bytes);
}

function renderDirectory(dir) {
  const now = Date.now();
  const items = dir
    .slice()
    .sort((a, b) => b.announced_at_ms - a.announced_at_ms)
    .map((e) => {
      const href = `/watch/${encodeURIComponent(e.channel)}`;
      return el('li', { class: 'channel', 'data-channel': e.channel },
        el('a', { class: 'title', href }, e.title || '(untitled)'),
        el('code', { class: 'id' }, e.channel),
        el('span', { class: 'meta' },
          `live for ${fmtAge(now - e.started_at_ms)} · seq ${e.head_seq} · announced ${fmtAge(now - e.announced_at_ms)} ago`),
        el('a', { class: 'button', href }, 'watch'));
    });
  replaceList($('directory'), items, 'directory-empty');
}

function renderJoined(joined) {
  const rows = joined.map((c) => el('tr', { 'data-channel': c.channel },
    el('td', {}, el('code', { title: c.channel }, short(c.channel))),
    el('td', {}, c.head_seq === null ? '–' : String(c.head_seq)),
    el('td', {}, String(c.segments_complete)),
    el('td', {}, String(c.segments_skipped)),
    el('td', {}, c.publishing ? 'publisher' : (c.flagged ? 'viewer (equivocation seen!)' : 'viewer')),
    el('td', {}, el('a', { href: `/watch/${encodeURIComponent(c.channel)}` }, 'watch'))));
  $('joined').tBodies[0].replaceChildren(...rows);
  $('joined-empty').hidden = rows.length > 0;
}

function renderPeers(peers) {
  replaceList($('peers'), peers.map((p) => el('li', {}, el('code', {}, p))), 'peers-empty');
}

async function refreshIndex() {
  const [status, channels, peers] = await Promise.allSettled([
    getJSON('/api/v1/status'), getJSON('/api/v1/channels'), getJSON('/api/v1/peers')]);
  if (status.status === 'fulfilled') {
    renderStatus(status.value);
    setConn(true, 'live');
  } else {
    setConn(false, 'node unreachable');
  }
  if (channels.status === 'fulfilled') {
    renderDirectory(channels.value.directory || []);
    renderJoined(channels.value.joined || []);
  }
  if (peers.status === 'fulfilled') renderPeers(peers.value.peers || []);
}

function watchCommands(origin, channel) {
  const hls = `${origin}/live/${channel}.m3u8`;
  const ts = `${origin}/live/${channel}.ts`;
  return [
    `vlc ${hls}`,
    `mpv ${hls}`,
    `ffplay ${hls}`,
    `curl -s ${ts} | mpv -`,
  ].join('\n');
}

function setupWatch(channel) {
  const hls = `${location.origin}/live/${channel}.m3u8`;
  const ts = `${location.origin}/live/${channel}.ts`;
  $('channel-id').textContent = channel;
  $('title').textContent = `channel ${short(channel)}`;
  $('hls-url').textContent = hls;
  $('hls-url').href = hls;
  $('ts-url').textContent = ts;
  $('ts-url').href = ts;
  $('commands').textContent = watchCommands(location.origin, channel);
  const video = $('player');
  if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.hidden = false;
    const state = $('player-state');
    state.hidden = false;
    state.textContent = 'player: loading';
    video.addEventListener('playing', () => {
      state.textContent = 'player: playing';
      video.dataset.played = 'true';
    });
    video.addEventListener('waiting', () => { state.textContent = 'player: buffering'; });
    // The gateway answers 404 until a first segment is playable: retry.
    video.addEventListener('error', () => {
      state.textContent = `player: error ${video.error ? video.error.code : ''}, retrying`;
      setTimeout(() => { video.src = hls; video.load(); }, REFRESH_MS);
    });
    video.src = hls;
  } else {
    $('no-native').hidden = false;
  }
}

async function refreshWatch(channel) {
  const [status, channels] = await Promise.allSettled([getJSON('/api/v1/status'), getJSON('/api/v1/channels')]);
  if (status.status === 'fulfilled') {
    setConn(true, 'live');
    $('peer-count').textContent = String(status.value.peers);
  } else {
    setConn(false, 'node unreachable');
  }
  if (channels.status === 'fulfilled') {
    const j = (channels.value.joined || []).find((c) => c.channel === channel);
    const d = (channels.value.directory || []).find((c) => c.channel === channel);
    $('head-seq').textContent = j && j.head_seq !== null ? String(j.head_seq) : '–';
    $('channel-segments').textContent = j ? `${j.segments_complete} complete, ${j.segments_skipped} skipped` : 'not joined yet';
    if (d && d.title) {
      $('title').textContent = d.title;
      document.title = `shoal: ${d.title}`;
    }
  }
}

function loop(fn) {
  const tick = async () => {
    try { await fn(); } catch (e) { setConn(false, String(e.message || e)); }
    setTimeout(tick, REFRESH_MS);
  };
  tick();
}

document.addEventListener('DOMContentLoaded', () => {
  const page = document.body.dataset.page;
  if (page === 'index') {
    loop(refreshIndex);
  } else if (page === 'watch') {
    const channel = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
    setupWatch(channel);
    loop(() => refreshWatch(channel));
  }
});
