// The wallboard page: polls /api/board every 2 s and updates the tiles in place (no reload).
// A failed poll keeps the last good tiles under a stale-data banner that says how old they are.
"use strict";

(() => {
  const POLL_MS = 2000;
  const TIMEOUT_MS = 10000;
  const $ = (id) => document.getElementById(id);

  const count = (value) => String(value);
  const percent = (value) => (value === null ? "-" : `${Math.round(value)}%`);
  const duration = (ms) => {  // m:ss
    if (ms === null) return "-";
    const seconds = Math.round(ms / 1000);
    return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  };
  // the figures a tile shows, by the board's field names
  const FORMATS = {
    oWaiting: count, oInteracting: count, nOffered: count, nAnswered: count, nAbandon: count,
    serviceLevelPct: percent, asaMs: duration, ahtMs: duration,
  };
  const LEVELS = ["green", "amber", "red", "none"];

  let lastGood = null;  // {board, at}: the board of the last successful poll and when it came
  let failure = null;  // why the newest poll failed, or null

  const clock = (ms) => new Date(ms).toISOString().slice(11, 19) + " UTC";
  const ago = (ms) => {
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return seconds < 120 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
  };

  function describeInterval(board) {
    if (!board.interval) return "no interval has metrics yet (calls waiting and interacting now only)";
    const start = Date.parse(board.interval);
    const end = start + board.intervalMinutes * 60000;
    return `interval ${board.interval.slice(0, 10)} ${clock(start).slice(0, 5)}–${clock(end).slice(0, 5)} UTC ` +
      "(the newest with metrics: stream time)";
  }

  function newTile(tile) {
    const element = $("tile").content.firstElementChild.cloneNode(true);
    element.dataset.key = tile.key;
    element.dataset.queueId = tile.queueId;
    element.dataset.mediaType = tile.mediaType;
    element.querySelector(".name").title = tile.queueId;
    return element;
  }

  function sparkline(svg, trend) {
    const values = trend.map((point) => point.nOffered);
    const top = Math.max(1, ...values);
    const step = values.length > 1 ? 100 / (values.length - 1) : 0;
    const points = values.map((value, index) => `${(index * step).toFixed(1)},${(19 - (18 * value) / top).toFixed(1)}`);
    svg.querySelector("polyline").setAttribute("points", points.join(" "));
    svg.querySelector("title").textContent = `offered per ${trend.length > 1 ? "interval, oldest first" : "interval"}: ` +
      trend.map((point) => `${point.interval.slice(11, 16)} ${point.nOffered}`).join(", ");
  }

  function updateTile(element, tile) {
    element.querySelector(".name").textContent = tile.name;
    element.querySelector(".media").textContent = tile.mediaType;
    for (const [field, format] of Object.entries(FORMATS)) {
      element.querySelector(`[data-field="${field}"]`).textContent = format(tile[field]);
    }
    element.classList.remove(...LEVELS);
    element.classList.add(tile.level);
    const sl = element.querySelector(".sl");
    sl.classList.remove(...LEVELS);
    sl.classList.add(tile.level);
    sl.querySelector(".target").textContent = `target ${Math.round(tile.targetPct)}% in ${tile.serviceLevelSeconds} s`;
    sparkline(element.querySelector(".trend"), tile.trend);
  }

  function render(board) {
    $("table").textContent = board.table;
    $("interval").textContent = describeInterval(board);
    $("empty").textContent = board.empty || "";
    $("empty").hidden = board.tiles.length > 0;
    const container = $("tiles");
    const existing = new Map([...container.children].map((element) => [element.dataset.key, element]));
    board.tiles.forEach((tile, index) => {
      const element = existing.get(tile.key) || newTile(tile);
      existing.delete(tile.key);
      updateTile(element, tile);
      if (container.children[index] !== element) container.insertBefore(element, container.children[index] || null);
    });
    existing.forEach((element) => element.remove());
  }

  function showStatus() {
    const banner = $("stale");
    document.body.classList.toggle("stale-data", failure !== null);
    if (lastGood) $("read-at").textContent = `read ${clock(lastGood.at)}`;
    if (failure === null) {
      banner.hidden = true;
      return;
    }
    banner.textContent = lastGood
      ? `Stale data: the board could not be refreshed (${failure}). Showing the read of ${clock(lastGood.at)}, ` +
        `${ago(lastGood.at)}.`
      : `No data: the board could not be read (${failure}). Retrying every ${POLL_MS / 1000} s.`;
    banner.hidden = false;
  }

  async function fetchBoard() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch("/api/board", { cache: "no-store", signal: controller.signal });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      return body;
    } catch (error) {
      if (error.name === "AbortError") throw new Error(`no answer within ${TIMEOUT_MS / 1000} s`);
      if (error instanceof TypeError) throw new Error("the wallboard server does not answer");  // network
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    try {
      const board = await fetchBoard();
      render(board);
      lastGood = { board, at: board.readAtMs };
      failure = null;
    } catch (error) {
      failure = error.message || "unknown error";
    }
    showStatus();
    setTimeout(poll, POLL_MS);
  }

  setInterval(showStatus, 1000);  // the banner's "… s ago" keeps counting while polls fail
  poll();
})();
