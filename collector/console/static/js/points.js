// Every camera of the city as a dot coloured by state, drawn on one canvas: 68,000 points redraw in a few
// milliseconds where 68,000 Leaflet markers would take seconds. Positions are kept in normalised Web Mercator
// (0..1), so a redraw is a multiply and a subtract per point.
export const COLOURS = { online: "#2e7d32", degraded: "#e0a000", offline: "#c62828", unauthorized: "#8e24aa", unknown: "#7a7a7a" };
// Dots grow as one zooms in: at the city's scale they overlap, at a street's they are few.
const sizeAt = (zoom) => (zoom < 12 ? 2 : zoom < 14 ? 3 : 5);

export const PointsLayer = L.Layer.extend({
  initialize() {
    this._n = 0;
  },

  // `points`: GET /v1/cameras/points (parallel arrays).
  setPoints(points) {
    const n = points.count;
    this._ids = points.camera_ids;
    this._states = points.states;
    this._state = Uint8Array.from(points.state);
    this._district = Uint8Array.from(points.district);
    this._districts = points.districts;
    this._x = new Float64Array(n);
    this._y = new Float64Array(n);
    for (let i = 0; i < n; i += 1) {
      const lat = (points.lat[i] * Math.PI) / 180;
      this._x[i] = points.lon[i] / 360 + 0.5;
      this._y[i] = 0.5 - Math.log(Math.tan(Math.PI / 4 + lat / 2)) / (2 * Math.PI);
    }
    this._n = n;
    if (this._map) this._redraw();
  },

  onAdd(map) {
    this._canvas = L.DomUtil.create("canvas", "points-layer leaflet-zoom-hide");
    map.getPanes().overlayPane.appendChild(this._canvas);
    map.on("moveend zoomend resize viewreset", this._redraw, this);
    this._redraw();
  },

  onRemove(map) {
    map.off("moveend zoomend resize viewreset", this._redraw, this);
    this._canvas.remove();
  },

  // The camera drawn nearest to a container point, within `radius` pixels: {id, district, state} or null.
  near(point, radius = 6) {
    if (!this._n) return null;
    const { scale, dx, dy } = this._frame(); // the canvas' corner is the container's
    let best = -1;
    let bestD = radius * radius;
    for (let i = 0; i < this._n; i += 1) {
      const x = this._x[i] * scale - dx - point.x;
      const y = this._y[i] * scale - dy - point.y;
      const d = x * x + y * y;
      if (d <= bestD) { best = i; bestD = d; }
    }
    if (best < 0) return null;
    return { id: this._ids[best], district: this._districts[this._district[best]], state: this._states[this._state[best]] };
  },

  // Scale of the world in pixels and the offset of the canvas' top-left corner in world pixels.
  _frame() {
    const map = this._map;
    const scale = 256 * 2 ** map.getZoom();
    const origin = map.getPixelOrigin();
    const topLeft = map.containerPointToLayerPoint([0, 0]);
    return { scale, dx: origin.x + topLeft.x, dy: origin.y + topLeft.y, topLeft };
  },

  _redraw() {
    const map = this._map;
    if (!map) return;
    const started = performance.now();
    const size = map.getSize();
    const ratio = window.devicePixelRatio || 1;
    const canvas = this._canvas;
    canvas.width = size.x * ratio;
    canvas.height = size.y * ratio;
    canvas.style.width = `${size.x}px`;
    canvas.style.height = `${size.y}px`;
    const { scale, dx, dy, topLeft } = this._frame();
    L.DomUtil.setPosition(canvas, topLeft);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    const SIZE = sizeAt(map.getZoom());
    const half = SIZE / 2;
    (this._states ?? []).forEach((state, code) => {
      ctx.beginPath();
      for (let i = 0; i < this._n; i += 1) {
        if (this._state[i] !== code) continue;
        const x = this._x[i] * scale - dx;
        const y = this._y[i] * scale - dy;
        if (x < -SIZE || y < -SIZE || x > size.x + SIZE || y > size.y + SIZE) continue;
        ctx.rect(x - half, y - half, SIZE, SIZE);
      }
      ctx.fillStyle = COLOURS[state] ?? COLOURS.unknown;
      ctx.fill();
    });
    this.lastDrawMs = performance.now() - started;
    if (this._n) this.fire("drawn", { ms: this.lastDrawMs, count: this._n });
  },
});
