// A row's sparkline: the last hour of one-minute closes on a small canvas, coloured against the reference price.
// It is scaled to its own min/max so it shows the hour's shape: including the reference (often far outside the
// hour's range) would flatten it to a line; the dashed reference is drawn only when it falls inside the range.
// Colours come from the theme's CSS variables, read once per theme (getComputedStyle per draw would cost more
// than the drawing).

let colours = null;

export function resetSparklineColours() {
  colours = null;
}

function themeColours() {
  if (!colours) {
    const style = getComputedStyle(document.documentElement);
    const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
    colours = { up: read('--up', '#3fb950'), down: read('--down', '#f85149'), ref: read('--spark-ref', '#666') };
  }
  return colours;
}

export function drawSparkline(canvas, closes, reference) {
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const points = closes.filter(Number.isFinite);
  canvas.dataset.points = String(points.length);
  if (points.length < 2) return;
  const min = Math.min(...points);
  const max = Math.max(...points);
  const span = max - min || 1;
  const x = (i) => (i / (points.length - 1)) * (width - 2) + 1;
  const y = (v) => height - 2 - ((v - min) / span) * (height - 4);
  const theme = themeColours();
  const up = points[points.length - 1] >= (Number.isFinite(reference) ? reference : points[0]);
  if (Number.isFinite(reference) && reference > 0 && reference >= min && reference <= max) {
    ctx.strokeStyle = theme.ref;
    ctx.setLineDash([2, 2]);
    ctx.beginPath();
    ctx.moveTo(0, y(reference));
    ctx.lineTo(width, y(reference));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = up ? theme.up : theme.down;
  ctx.lineWidth = 1.25;
  ctx.beginPath();
  points.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.stroke();
}
