/**
 * The signage player: one self-contained HTML page (no CDN, no build) that a screen opens full-screen at
 * /signage/<screenId>?token=<screen token>. Idle: store name, clock, slow ambient motion. On a "promotion" event it
 * shows the offer large for its duration, then reports proof of play. EventSource reconnects by itself.
 * The token is read from the page's own URL by the script, never written into the HTML.
 */

const escapeHtml = (s: string): string =>
  s.replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch] as string,
  );

export function signagePage(screen: { id: string; name: string; storeName: string }): string {
  const config = JSON.stringify({ screenId: screen.id }).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(screen.storeName)} · ${escapeHtml(screen.name)}</title>
<style>
  :root { --ink: #fdfbf7; --soft: rgba(253, 251, 247, .72); --accent: #ffb347; --accent2: #ff5f6d; }
  * { box-sizing: border-box; margin: 0; padding: 0; }
  html, body { height: 100%; overflow: hidden; cursor: none; }
  body {
    font-family: "Inter", "Segoe UI", "Helvetica Neue", Arial, sans-serif; color: var(--ink);
    background: radial-gradient(ellipse at 20% 10%, #2b1d4a 0%, #140f26 45%, #07060d 100%);
    -webkit-font-smoothing: antialiased;
  }
  .blob { position: absolute; border-radius: 50%; filter: blur(80px); opacity: .55; will-change: transform; }
  .b1 { width: 55vw; height: 55vw; left: -10vw; top: -15vw; background: #6a3de8; animation: drift1 38s ease-in-out infinite alternate; }
  .b2 { width: 45vw; height: 45vw; right: -12vw; top: 20vh; background: #ff5f6d; animation: drift2 44s ease-in-out infinite alternate; }
  .b3 { width: 40vw; height: 40vw; left: 30vw; bottom: -20vw; background: #ffb347; opacity: .35; animation: drift3 52s ease-in-out infinite alternate; }
  @keyframes drift1 { to { transform: translate(18vw, 12vh) scale(1.15); } }
  @keyframes drift2 { to { transform: translate(-20vw, -8vh) scale(.9); } }
  @keyframes drift3 { to { transform: translate(-14vw, -10vh) scale(1.2); } }
  .grain { position: absolute; inset: 0; background-image: radial-gradient(rgba(255,255,255,.035) 1px, transparent 1px); background-size: 3px 3px; }

  .idle { position: absolute; inset: 0; display: flex; flex-direction: column; justify-content: space-between; padding: 6vh 6vw; transition: opacity .8s ease, filter .8s ease; }
  .brand { display: flex; align-items: center; gap: 1.2vw; font-size: 2.2vw; font-weight: 600; letter-spacing: .02em; }
  .mark { width: 2.6vw; height: 2.6vw; border-radius: 30%; background: linear-gradient(135deg, var(--accent), var(--accent2)); box-shadow: 0 0 3vw rgba(255,140,90,.45); }
  .hero { font-size: 7.5vw; font-weight: 800; line-height: 1.02; letter-spacing: -.02em; max-width: 80vw; }
  .hero span { background: linear-gradient(90deg, var(--accent), var(--accent2)); -webkit-background-clip: text; background-clip: text; color: transparent; }
  .footer { display: flex; justify-content: space-between; align-items: flex-end; }
  .clock { font-size: 6vw; font-weight: 300; font-variant-numeric: tabular-nums; letter-spacing: -.02em; }
  .date { font-size: 1.6vw; color: var(--soft); margin-top: .4vh; }
  .status { font-size: 1.1vw; color: var(--soft); display: flex; align-items: center; gap: .6vw; }
  .dot { width: .8vw; height: .8vw; border-radius: 50%; background: #888; transition: background .4s; }
  .dot.live { background: #3ddc84; box-shadow: 0 0 1vw #3ddc84; }

  .promo { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; padding: 6vh 6vw;
           opacity: 0; transform: scale(1.04); transition: opacity .7s ease, transform .9s cubic-bezier(.2,.8,.2,1); pointer-events: none; }
  .promo.show { opacity: 1; transform: scale(1); }
  body.playing .idle { opacity: .0; filter: blur(12px); }
  .card { width: 100%; max-width: 86vw; padding: 7vh 6vw; border-radius: 3vw;
          background: linear-gradient(145deg, rgba(255,255,255,.14), rgba(255,255,255,.04));
          border: 1px solid rgba(255,255,255,.18); box-shadow: 0 4vh 12vh rgba(0,0,0,.45); backdrop-filter: blur(18px); }
  .tag { display: inline-block; font-size: 1.5vw; font-weight: 700; letter-spacing: .18em; text-transform: uppercase;
         padding: .8vh 1.4vw; border-radius: 99px; background: linear-gradient(90deg, var(--accent), var(--accent2)); color: #1a0f1f; }
  .title { font-size: 3.4vw; font-weight: 600; color: var(--soft); margin-top: 4vh; }
  .message { font-size: 6.4vw; font-weight: 800; line-height: 1.08; letter-spacing: -.015em; margin-top: 2vh; }
  .bar { height: .8vh; border-radius: 99px; background: rgba(255,255,255,.15); margin-top: 6vh; overflow: hidden; }
  .bar > i { display: block; height: 100%; width: 100%; background: linear-gradient(90deg, var(--accent), var(--accent2)); transform-origin: left; }
</style>
</head>
<body>
  <div class="blob b1"></div><div class="blob b2"></div><div class="blob b3"></div><div class="grain"></div>
  <main class="idle">
    <div class="brand"><div class="mark"></div>${escapeHtml(screen.storeName)}</div>
    <div class="hero">Good to see you.<br><span>Look around, take your time.</span></div>
    <div class="footer">
      <div><div class="clock" id="clock">--:--</div><div class="date" id="date"></div></div>
      <div class="status"><div class="dot" id="dot"></div><span id="status">connecting</span></div>
    </div>
  </main>
  <section class="promo" id="promo" aria-live="polite">
    <div class="card">
      <div class="tag" id="tag">Today</div>
      <div class="title" id="title"></div>
      <div class="message" id="message"></div>
      <div class="bar"><i id="bar"></i></div>
    </div>
  </section>
<script>
(() => {
  const cfg = ${config};
  const token = new URLSearchParams(location.search).get("token") || "";
  const $ = (id) => document.getElementById(id);

  const tick = () => {
    const now = new Date();
    $("clock").textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    $("date").textContent = now.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" });
  };
  tick(); setInterval(tick, 1000);

  const queue = [];
  let playing = false;

  const reportPlay = (playId, playedMs) =>
    fetch("/api/screens/" + encodeURIComponent(cfg.screenId) + "/plays", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer " + token },
      body: JSON.stringify({ playId, playedMs }),
    }).catch(() => {});

  const playNext = () => {
    const p = queue.shift();
    if (!p) { playing = false; document.body.classList.remove("playing"); return; }
    playing = true;
    $("tag").textContent = p.audience === "member" ? "Just for you" : "Today only";
    $("title").textContent = p.title;
    $("message").textContent = p.message;
    const bar = $("bar");
    bar.style.transition = "none"; bar.style.transform = "scaleX(1)";
    void bar.offsetWidth;
    bar.style.transition = "transform " + p.durationMs + "ms linear"; bar.style.transform = "scaleX(0)";
    document.body.classList.add("playing");
    $("promo").classList.add("show");
    const started = performance.now();
    setTimeout(() => {
      $("promo").classList.remove("show");
      reportPlay(p.playId, Math.round(performance.now() - started));
      setTimeout(playNext, 900);
    }, p.durationMs);
  };

  const connect = () => {
    const es = new EventSource("/api/screens/" + encodeURIComponent(cfg.screenId) + "/events?token=" + encodeURIComponent(token));
    const live = (on) => { $("dot").classList.toggle("live", on); $("status").textContent = on ? "live" : "reconnecting"; };
    es.addEventListener("hello", () => live(true));
    es.addEventListener("ping", () => live(true));
    es.addEventListener("promotion", (e) => {
      try { queue.push(JSON.parse(e.data)); } catch { return; }
      // a backlog is stale: keep the newest few (unplayed ones are simply never reported as played)
      while (queue.length > 3) queue.shift();
      if (!playing) playNext();
    });
    es.onerror = () => live(false);
  };
  connect();
})();
</script>
</body>
</html>
`;
}
