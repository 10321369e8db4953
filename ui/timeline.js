// The training timeline: scrub and play through every snapshot of a run in the browser, with no server round
// trip, from a package the server built once (icl_core/analysis/timeline.py). Pausing, releasing the scrubber or
// stepping with the keys sends the snapshot on screen to the server once (the "commit" trigger), so the sidebar,
// the ?step= link and every other page follow it.
//
// The Phase change page's Vega-Lite charts follow the frame too: their "timeline index" parameter is bound to
// document.body (Vega-Lite's BindDirect), which this component updates and signals with the package's `event` on every frame.
// document.body is never replaced, so a chart drawn before or after this component binds to the same element.

const SPEEDS = [2, 5, 10, 15, 20, 30]; // snapshots a second
const DEFAULT_SPEED = 10;
const COMMIT_DELAY_MS = 350; // keys held down or a drag's last moves send one commit, not one per frame
const STATES = new WeakMap(); // one timeline per mounted element, kept across the data updates of reruns

// For benchmarks/latency.py and the browser tests: input-to-paint times and the times frames were shown in play
// (the last PROBE_KEEP of each: an hour of Play in class must not grow them without end).
const probe = (window.__iclTimeline = window.__iclTimeline || { scrubMs: [], playTimes: [], commits: 0 });
const PROBE_KEEP = 2000;

function record(values, value) {
  values.push(value);
  if (values.length > PROBE_KEEP) values.splice(0, values.length - PROBE_KEEP);
}

function decode(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// An opaque shade per byte level, blended over white (as ui/strips.py shades the server's strips).
function palette(rgb) {
  const bg = [];
  const fg = [];
  for (let level = 0; level < 256; level++) {
    const a = level / 255;
    bg.push(`rgb(${rgb.map((c) => Math.round(255 + a * (c - 255))).join(",")})`);
    fg.push(a > 0.55 ? "#fff" : "#111");
  }
  return { bg, fg };
}

function afterPaint(fn) {
  // requestAnimationFrame runs just before the frame is painted; a message posted from it is handled just after.
  requestAnimationFrame(() => {
    const channel = new MessageChannel();
    channel.port1.onmessage = fn;
    channel.port2.postMessage(0);
  });
}

class Timeline {
  constructor(root) {
    this.root = root;
    this.data = null;
    this.index = 0;
    this.playing = false;
    this.raf = 0;
    this.lastTick = null;
    this.commitTimer = 0;
    this.committed = null;
    this.trigger = null;
    this.build();
  }

  build() {
    const box = el("div", "icl-tl");
    box.tabIndex = -1;
    const bar = el("div", "bar");
    this.playButton = el("button", "play", "▶ Play");
    this.playButton.type = "button";
    this.scrub = el("input", "scrub");
    Object.assign(this.scrub, { type: "range", min: 0, max: 0, step: 1, value: 0 });
    this.scrub.setAttribute("aria-label", "Training snapshot");
    this.readout = el("span", "readout");
    const speedLabel = el("label", "speed", "speed ");
    this.speed = el("select");
    for (const s of SPEEDS) {
      const option = el("option", "", `${s}/s`);
      option.value = String(s);
      option.selected = s === DEFAULT_SPEED;
      this.speed.appendChild(option);
    }
    speedLabel.appendChild(this.speed);
    const loopLabel = el("label", "loop");
    this.loop = el("input");
    Object.assign(this.loop, { type: "checkbox", checked: true });
    loopLabel.append(this.loop, " loop");
    bar.append(this.playButton, this.scrub, this.readout, speedLabel, loopLabel);
    this.views = el("div", "views");
    box.append(bar, this.views);
    this.root.appendChild(box);
    this.box = box;

    this.playButton.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.scrub.addEventListener("input", (ev) => {
      this.stopLoop();
      this.playing = false;
      this.playButton.textContent = "▶ Play";
      this.show(Number(this.scrub.value), ev.timeStamp);
    });
    this.scrub.addEventListener("change", () => this.commitSoon());
    box.addEventListener("keydown", (ev) => {
      if (ev.target === this.scrub || ev.target === this.speed) return; // the range input steps by itself
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        ev.preventDefault();
        this.pause(false);
        const next = Math.min(Math.max(this.index + (ev.key === "ArrowRight" ? 1 : -1), 0), this.count - 1);
        this.show(next, ev.timeStamp);
        this.commitSoon();
      }
    });
  }

  get count() {
    return this.data ? this.data.steps.length : 0;
  }

  load(data) {
    const sameFrames = Boolean(this.data) && this.data.frames_id === data.frames_id;
    const firstLoad = !this.data;
    const index = data.index;
    if (sameFrames && this.data.present === data.present) {
      // A rerun with the frames the views already hold: only the server's step may have moved.
      this.data.index = index;
      this.committed = data.steps[index];
      if (!this.playing && index !== this.index) this.show(index);
      if (this.playing) this.startLoop();
      return;
    }
    this.data = data;
    this.box.classList.toggle("present", Boolean(data.present));
    this.box.style.setProperty("--icl-target", data.colors.target);
    this.box.style.setProperty("--icl-attention", `rgb(${data.colors.attention.join(",")})`);
    this.scrub.max = String(this.count - 1);
    this.views.replaceChildren();
    this.view = data.kind === "text" ? new TextView(this.views, data) : new PhaseView(this.views, data);
    // The server's step wins, except while playing through the same snapshots (a rerun from another widget).
    if (!(this.playing && sameFrames)) this.index = index;
    this.committed = data.steps[data.index];
    this.show(Math.min(this.index, this.count - 1));
    if (this.playing) this.startLoop();
    if (firstLoad) this.box.dataset.ready = "1";
  }

  show(index, inputTime) {
    this.index = index;
    if (Number(this.scrub.value) !== index) this.scrub.value = String(index);
    this.readout.textContent = `${index + 1}/${this.count} · ${this.data.labels[index]}`;
    this.box.dataset.index = String(index);
    this.box.dataset.step = String(this.data.steps[index]);
    this.view.show(index);
    document.body.value = index; // a number: the charts compare it with their datum.frame as is
    document.body.dispatchEvent(new Event(this.data.event));
    if (inputTime !== undefined) afterPaint(() => record(probe.scrubMs, performance.now() - inputTime));
  }

  play() {
    if (this.index >= this.count - 1) this.show(0);
    this.playing = true;
    this.playButton.textContent = "⏸ Pause";
    this.startLoop();
  }

  pause(commit = true) {
    const was = this.playing;
    this.playing = false;
    this.playButton.textContent = "▶ Play";
    this.stopLoop();
    if (was && commit) this.commit();
  }

  startLoop() {
    this.stopLoop();
    this.lastTick = null;
    const tick = (now) => {
      if (!this.playing) return;
      const interval = 1000 / Number(this.speed.value);
      if (this.lastTick === null) this.lastTick = now;
      if (now - this.lastTick >= interval - 1) {
        // Keep the cadence; after a stall (a hidden tab), start afresh instead of rushing to catch up.
        this.lastTick = now - this.lastTick > 2 * interval ? now : this.lastTick + interval;
        let next = this.index + 1;
        if (next >= this.count) {
          if (!this.loop.checked) {
            this.pause();
            return;
          }
          next = 0;
        }
        this.show(next);
        record(probe.playTimes, now);
      }
      this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
  }

  stopLoop() {
    if (this.raf) cancelAnimationFrame(this.raf);
    this.raf = 0;
  }

  commitSoon() {
    clearTimeout(this.commitTimer);
    this.commitTimer = setTimeout(() => this.commit(), COMMIT_DELAY_MS);
  }

  commit() {
    clearTimeout(this.commitTimer);
    const step = this.data.steps[this.index];
    if (step === this.committed || !this.trigger) return;
    this.committed = step;
    probe.commits += 1;
    this.trigger("commit", step);
  }
}

class PhaseView {
  constructor(parent, data) {
    this.data = data;
    const row = el("div", "metrics");
    this.values = Object.keys(data.metrics).map((name) => {
      const cell = el("div", "metric");
      const value = el("div", "value");
      value.dataset.metric = name;
      cell.append(el("div", "name", name), value);
      row.appendChild(cell);
      return [name, value];
    });
    parent.appendChild(row);
  }

  show(index) {
    for (const [name, node] of this.values) node.textContent = this.data.metrics[name][index];
  }
}

class TextView {
  constructor(parent, data) {
    this.data = data;
    this.shades = palette(data.colors.attention);
    this.strips = decode(data.strips);
    this.heat = decode(data.heatmap.levels);
    this.width = data.dest - data.strip_start + 1; // keys per strip
    const targets = new Set(data.targets);
    const strips = el("div", "strips");
    strips.appendChild(el("div", "title", `Where each head looks from token ${data.dest} '${data.tokens[data.dest]}'`));
    this.cells = [];
    data.heads.forEach((head) => {
      const row = el("div", "row");
      row.dataset.head = head;
      const toks = el("span", "toks");
      for (let k = data.strip_start; k <= data.dest; k++) {
        const span = el("span", (targets.has(k) ? "t" : "") + (k === data.dest ? " d" : ""), data.tokens[k]);
        span.dataset.key = String(k);
        toks.appendChild(span);
        this.cells.push(span);
      }
      row.append(el("span", "head", head), toks);
      strips.appendChild(row);
    });
    const side = el("div", "side");
    const heat = data.heatmap;
    side.appendChild(
      el("div", "title", `${heat.head}'s attention, tokens ${heat.start}–${heat.start + heat.size - 1}`),
    );
    this.canvas = el("canvas", "heat");
    this.canvas.width = this.canvas.height = heat.size;
    this.canvas.dataset.head = heat.head;
    this.canvas.addEventListener("mousemove", (ev) => this.hover(ev));
    side.appendChild(this.canvas);
    side.appendChild(el("div", "note", "rows: destination · columns: source · darker = more attention"));
    side.appendChild(el("div", "title", "Next-token prediction"));
    this.preds = el("table", "preds");
    side.appendChild(this.preds);
    this.loss = el("div", "note");
    side.appendChild(this.loss);
    const body = el("div", "text-views");
    body.append(strips, side);
    parent.appendChild(body);
    this.image = this.canvas.getContext("2d").createImageData(heat.size, heat.size);
    this.guesses = new Set(data.targets.map((k) => data.tokens[k]));
  }

  show(index) {
    const { bg, fg } = this.shades;
    const n = this.cells.length;
    const offset = index * n;
    for (let i = 0; i < n; i++) {
      const level = this.strips[offset + i];
      const cell = this.cells[i];
      cell.style.background = bg[level];
      cell.style.color = fg[level];
      cell.dataset.w = (level / 255).toFixed(3);
    }
    this.drawHeat(index);
    this.drawPreds(index);
  }

  drawHeat(index) {
    const m = this.data.heatmap.size;
    const per = (m * (m + 1)) / 2;
    const levels = this.heat.subarray(index * per, (index + 1) * per);
    const px = this.image.data;
    const rgb = this.data.colors.attention;
    let i = 0;
    for (let q = 0; q < m; q++) {
      for (let k = 0; k < m; k++) {
        const level = k <= q ? levels[i++] : 0;
        const a = level / 255;
        const o = (q * m + k) * 4;
        px[o] = Math.round(255 + a * (rgb[0] - 255));
        px[o + 1] = Math.round(255 + a * (rgb[1] - 255));
        px[o + 2] = Math.round(255 + a * (rgb[2] - 255));
        px[o + 3] = k <= q ? 255 : 40;
      }
    }
    this.canvas.getContext("2d").putImageData(this.image, 0, 0);
    this.heatIndex = index;
  }

  hover(ev) {
    const m = this.data.heatmap.size;
    const box = this.canvas.getBoundingClientRect();
    const q = Math.floor(((ev.clientY - box.top) / box.height) * m);
    const k = Math.floor(((ev.clientX - box.left) / box.width) * m);
    if (q < 0 || k < 0 || q >= m || k >= m || k > q) {
      this.canvas.title = "";
      return;
    }
    const per = (m * (m + 1)) / 2;
    const level = this.heat[this.heatIndex * per + (q * (q + 1)) / 2 + k];
    const start = this.data.heatmap.start;
    const tok = this.data.tokens;
    this.canvas.title = `${start + q} '${tok[start + q]}' → ${start + k} '${tok[start + k]}': ${(level / 255).toFixed(3)}`;
  }

  drawPreds(index) {
    const rows = this.data.preds[index].map(([label, p]) => {
      const tr = el("tr");
      if (label === this.data.actual) tr.className = "actual";
      else if (this.guesses.has(label)) tr.className = "guess";
      const bar = el("td", "bar");
      const fill = el("span");
      fill.style.width = `${Math.round(p * 100)}%`;
      bar.appendChild(fill);
      tr.append(el("td", "tok", label), bar, el("td", "p", p.toFixed(3)));
      return tr;
    });
    this.preds.replaceChildren(...rows);
    this.loss.textContent =
      this.data.actual === null
        ? "The last token: there is no next token to score. Orange: what induction would copy."
        : `Actual next '${this.data.actual}' (bold): loss ${this.data.losses[index].toFixed(2)} nats. ` +
          "Orange: what induction would copy.";
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let timeline = STATES.get(parentElement);
  if (!timeline) {
    timeline = new Timeline(parentElement);
    STATES.set(parentElement, timeline);
  }
  timeline.trigger = setTriggerValue;
  timeline.load(data);
  return () => timeline.stopLoop();
}
