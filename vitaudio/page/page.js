// The demo page's behaviour; served by vitaudio.serve as /page.js, loaded by index.html.
"use strict";
const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
let info = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function colour(label) {
  const index = info ? info.classes.indexOf(label) : 0;
  return PALETTE[(index < 0 ? 0 : index) % PALETTE.length];
}

// A tagger's threshold for a label (on its sigmoid score), or null when the model info did not load.
function threshold(label) {
  const index = info && info.thresholds ? info.classes.indexOf(label) : -1;
  return index < 0 ? null : info.thresholds[index];
}

function percent(score) {
  return (100 * score).toFixed(1) + "%";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadInfo() {
  try {
    info = await (await fetch("/api/info")).json();
    const kind = info.task === "multi_label" ? " tags (a clip gets every tag whose score reaches its threshold): " :
      " classes: ";
    $("info").textContent = info.classes.length + kind + info.classes.join(", ") + " \u00b7 segments of " +
      info.segment_seconds + " s \u00b7 uploads up to " + info.max_upload_mb + " MB";
  } catch (err) {
    $("info").textContent = "cannot reach the server: " + err;
  }
}

async function classify(blob, name) {
  if (info && blob.size > info.max_upload_bytes) {
    setStatus("upload larger than " + info.max_upload_mb + " MB: choose a shorter clip", true);
    return;
  }
  setStatus("classifying " + name + " ...", false);
  let answer;
  try {
    const response = await fetch("/api/predict", {method: "POST", body: blob});
    answer = await response.json();
    if (!response.ok) {
      setStatus(answer.error || ("error " + response.status), true);
      return;
    }
  } catch (err) {
    setStatus("the request failed: " + err, true);
    return;
  }
  show(answer, name);
}

function show(answer, name) {
  // a tagger's predictions say whether each label passes its threshold
  const tagger = "tagged" in answer.predictions[0];
  $("result").classList.toggle("tagger", tagger);
  if (tagger) showTags(answer.predictions); else $("top-label").textContent = answer.predictions[0].label;
  showBars(answer.predictions, tagger);
  $("mel").src = answer.mel_png;
  if (tagger) showTagRoll(answer); else showTimeline(answer);
  $("duration").textContent = answer.duration.toFixed(2) + " s";
  $("result").hidden = false;
  const tags = tagger ? ", " + answer.predictions.filter((p) => p.tagged).length + " tag(s)" : "";
  setStatus(name + ": " + answer.duration.toFixed(2) + " s, " + answer.segments.length + " segment(s)" + tags, false);
}

function showTags(predictions) {
  const tagged = predictions.filter((p) => p.tagged);
  const chips = tagged.map((p) => {
    const chip = element("span", "tag", p.label);
    chip.style.background = colour(p.label);
    chip.title = p.label + " " + percent(p.score);
    return chip;
  });
  $("top-label").replaceChildren(...(chips.length ? chips : [element("span", "no-tag", "none: no label reaches " +
                                                                     "its threshold")]));
}

function showBars(predictions, tagger) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const p of predictions) {
    const row = element("div", "bar-row" + (tagger ? (p.tagged ? " tagged" : " untagged") : ""));
    const track = element("div", "track");
    const bar = element("div", "bar");
    bar.style.width = percent(p.score);
    bar.style.background = colour(p.label);
    track.append(bar);
    const cut = tagger ? threshold(p.label) : null;
    if (cut !== null) {
      const tick = element("div", "threshold");
      tick.style.left = percent(cut);
      track.append(tick);
      row.title = p.label + ": score " + percent(p.score) + (p.tagged ? " reaches" : " is below") +
        " its threshold " + percent(cut);
    }
    row.append(element("span", "name", (tagger && p.tagged ? "\u2713 " : "") + p.label), track,
               element("span", "score", percent(p.score)));
    bars.append(row);
  }
}

function segmentBlock(segment, duration, label, className) {
  const block = element("div", className);
  block.style.left = (100 * segment.start / duration) + "%";
  block.style.width = (100 * (segment.end - segment.start) / duration) + "%";
  block.style.background = colour(label);
  return block;
}

function showTimeline(answer) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  timeline.classList.remove("tag-roll");
  let lane = 0, laneEnd = 0, overlapping = false;
  for (const segment of answer.segments) {
    // the last segment is aligned to the clip's end and may overlap the one before: give it the other lane
    lane = segment.start < laneEnd - 1e-6 ? 1 - lane : 0;
    overlapping = overlapping || lane === 1;
    laneEnd = segment.end;
    const top = segment.predictions[0];
    const block = segmentBlock(segment, answer.duration, top.label, "segment lane" + lane);
    block.textContent = top.label + " " + Math.round(100 * top.score) + "%";
    block.title = segment.start.toFixed(2) + "-" + segment.end.toFixed(2) + " s: " +
      segment.predictions.map((p) => p.label + " " + percent(p.score)).join(", ");
    timeline.append(block);
  }
  timeline.classList.toggle("two-lanes", overlapping);
}

// A tagger's timeline: one row per label some segment is tagged with, a block wherever a segment is.
function showTagRoll(answer) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  timeline.classList.remove("two-lanes");
  timeline.classList.add("tag-roll");
  const heard = new Set(answer.segments.flatMap((s) => s.predictions.filter((p) => p.tagged).map((p) => p.label)));
  const labels = (info ? info.classes : [...heard]).filter((label) => heard.has(label));
  for (const label of labels) {
    const row = element("div", "tag-row");
    for (const segment of answer.segments) {
      const p = segment.predictions.find((q) => q.label === label && q.tagged);
      if (!p) continue;
      const block = segmentBlock(segment, answer.duration, label, "segment");
      block.textContent = label + " " + Math.round(100 * p.score) + "%";
      block.title = segment.start.toFixed(2) + "-" + segment.end.toFixed(2) + " s: " + label + " " + percent(p.score);
      row.append(block);
    }
    timeline.append(row);
  }
  if (!labels.length) timeline.append(element("div", "no-tag", "no segment alone reaches a threshold"));
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) classify(file, file.name);
});
$("drop").addEventListener("dragover", (event) => { event.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) classify(file, file.name);
});

// Recording: browsers' MediaRecorder makes webm/opus, which the server's libsndfile cannot read, so the page taps
// the raw samples with an AudioWorklet (/tap.js) and writes a 16-bit mono WAV itself.
let recorder = null;

function encodeWav(chunks, sampleRate) {
  const n = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      const s = Math.max(-1, Math.min(1, sample));
      view.setInt16(offset, s < 0 ? s * 0x8000 : s * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([view], {type: "audio/wav"});
}

async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const context = new AudioContext();
  await context.audioWorklet.addModule("/tap.js");
  const source = context.createMediaStreamSource(stream);
  const tap = new AudioWorkletNode(context, "tap");
  const chunks = [];
  tap.port.onmessage = (event) => chunks.push(event.data);
  const mute = context.createGain();
  mute.gain.value = 0;  // connected to the output so the graph runs, silent so there is no feedback
  source.connect(tap).connect(mute).connect(context.destination);
  recorder = {stream, context, chunks, started: performance.now()};
  $("record").textContent = "\u25a0 Stop";
  $("record").classList.add("recording");
  setStatus("recording... press Stop to classify", false);
}

async function stopRecording() {
  const {stream, context, chunks, started} = recorder;
  recorder = null;
  stream.getTracks().forEach((track) => track.stop());
  await context.close();
  $("record").textContent = "\u25cf Record";
  $("record").classList.remove("recording");
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (!chunks.length) {
    setStatus("nothing was recorded", true);
    return;
  }
  classify(encodeWav(chunks, context.sampleRate), "recording (" + seconds + " s)");
}

if (window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia &&
    window.AudioWorkletNode) {
  $("record").hidden = false;
  $("record").addEventListener("click", async () => {
    try {
      if (recorder) await stopRecording(); else await startRecording();
    } catch (err) {
      recorder = null;
      setStatus("cannot record: " + err.message, true);
    }
  });
}
loadInfo();
