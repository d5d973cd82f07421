// liftoff debugger: liftoff local's events, live. Plain JavaScript with no dependency, served
// by the tracking API from liftoff_local/debugger_page/; it talks only to its own origin.
//
// Every value that comes from an event is put into the page as text (textContent, text
// nodes), never as markup: event JSON is whatever a client sent.
'use strict'

const MAX_ROWS = 5000 // the page keeps the newest this many (and counts what it let go)
const FILTERS = ['show', 'source', 'type', 'event', 'user', 'text']
const OVERSCAN = 8 // rows rendered above and below what is visible
const TYPING_MS = 300 // text filters apply this long after the last keystroke
const ARRIVALS_MS = 100 // new events redraw the list at most this often (scrolling: at once)
const COLOUR_LIMIT = 200000 // characters of JSON above which it is shown without colours
const MAX_DEPTH = 400 // deeper JSON is shown as it is stored, not indented
const ARRIVALS = 1000 // messageId -> when it reached the list / was rendered (tests, benchmarks)

const $ = (id) => document.getElementById(id)
const list = $('list')
const rowsEl = $('rows')
const form = $('filters')
const numbers = new Intl.NumberFormat()

const state = {
  rows: [], // oldest first; shown newest first
  keys: new Set(), // 'e12', 'q3': what the page holds (a resumed stream may repeat some)
  nextN: 1, // every row gets a number, in order of arrival
  letGo: 0, // entries this page did not keep or was not sent (its bounds)
  paused: false,
  pending: [], // arrivals while paused
  expanded: new Map(), // row number -> height of its details
  nodes: new Map(), // row number -> element, for the rows rendered
  offsets: new Float64Array(1), // top of each row, in display order
  dirty: true,
  scrollAdjust: 0,
  frame: 0,
  soon: 0,
  lastRender: 0,
  rowH: 36,
  rowQH: 60,
  current: null, // the row number that Tab reaches in the list
  focused: null,
  filters: {},
  cursor: '',
  source: null,
  retryMs: 1000,
  retryTimer: 0,
  hello: null,
  stats: null,
  arrivals: new Map(), // messageId -> when its row was first rendered
  listed: new Map(), // messageId -> when it reached the page's list (even if scrolled past)
}

// --- small helpers --------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag)
  if (className) node.className = className
  if (text !== undefined && text !== null) node.textContent = String(text)
  return node
}

function announce(text) {
  $('announce').textContent = text
}

function count(n) {
  return n === null || n === undefined ? '–' : numbers.format(n)
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0')
}

function clock(iso) {
  const date = iso ? new Date(iso) : null
  if (!date || Number.isNaN(date.getTime())) return ''
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`
}

function remember(map, messageId, at) {
  map.set(messageId, at)
  if (map.size > ARRIVALS) map.delete(map.keys().next().value)
}

function keyOf(row) {
  return row.k + row.seq
}

function rowHeight(row) {
  return (row.k === 'q' ? state.rowQH : state.rowH) + (state.expanded.get(row.n) || 0)
}

// --- filters and the URL -------------------------------------------------------------------

function filtersFromUrl() {
  const params = new URLSearchParams(location.search)
  const filters = {}
  for (const name of FILTERS) {
    const value = params.get(name)
    if (value) filters[name] = value
  }
  return filters
}

function filtersFromForm() {
  const filters = {}
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim()
    if (value) filters[name] = value
  }
  return filters
}

function showFilters(filters) {
  for (const name of FILTERS) form.elements[name].value = filters[name] || ''
}

function sameFilters(a, b) {
  return FILTERS.every((name) => (a[name] || '') === (b[name] || ''))
}

// On a phone the filters fold away, unless some are in force.
const filterBox = $('filter-box')
const phone = matchMedia('(max-width: 700px)')
function fitFilters() {
  const active = Object.keys(state.filters).length
  $('filter-toggle').textContent = active ? `Filters (${active} in force)` : 'Filters'
  if (!phone.matches) filterBox.open = true
}
phone.addEventListener('change', fitFilters)

function applyFilters(filters) {
  if (sameFilters(filters, state.filters)) return
  state.filters = filters
  fitFilters()
  const params = new URLSearchParams()
  for (const name of FILTERS) if (filters[name]) params.set(name, filters[name])
  const query = params.toString()
  history.replaceState(null, '', location.pathname + (query ? `?${query}` : ''))
  restart()
}

let typing = 0
form.addEventListener('input', (event) => {
  clearTimeout(typing)
  const delay = event.target.tagName === 'SELECT' ? 0 : TYPING_MS
  typing = setTimeout(() => applyFilters(filtersFromForm()), delay)
})
form.addEventListener('submit', (event) => {
  event.preventDefault()
  clearTimeout(typing)
  applyFilters(filtersFromForm())
})
$('clear').addEventListener('click', () => {
  showFilters({})
  applyFilters({})
})
window.addEventListener('popstate', () => {
  const filters = filtersFromUrl()
  showFilters(filters)
  applyFilters(filters)
})

function only(name, value) {
  const filters = { ...state.filters, [name]: value }
  showFilters(filters)
  applyFilters(filters)
}

// --- the live stream -----------------------------------------------------------------------

function setConnection(stateName, text) {
  const node = $('connection')
  const shown = state.paused && stateName === 'live' ? 'paused' : stateName
  if (node.dataset.state !== shown) announce(`Debugger ${text || shown}`)
  node.dataset.state = shown
  node.textContent = text || (shown === 'paused' ? 'live, paused' : shown)
}

function connect(resume) {
  clearTimeout(state.retryTimer)
  if (state.source) state.source.close()
  const params = new URLSearchParams(state.filters)
  params.set('backlog', String(MAX_ROWS))
  if (resume && state.cursor) params.set('after', state.cursor)
  const source = new EventSource(`/debugger/live?${params}`)
  state.source = source
  setConnection(resume ? 'reconnecting' : 'connecting', resume ? 'reconnecting…' : 'connecting…')
  source.addEventListener('open', () => {
    state.retryMs = 1000
    setConnection('live')
  })
  source.addEventListener('error', () => {
    if (source !== state.source) return
    if (source.readyState === EventSource.CLOSED) {
      // Refused (local mode stopped and not back yet, or too many debugger pages open):
      // try again, from where the page is.
      const seconds = Math.round(state.retryMs / 1000)
      setConnection('offline', `offline: retrying in ${seconds} s`)
      state.retryTimer = setTimeout(() => connect(true), state.retryMs)
      state.retryMs = Math.min(state.retryMs * 2, 10000)
    } else {
      setConnection('reconnecting', 'reconnecting…') // the browser retries by itself
    }
  })
  const handlers = { hello: onHello, entries: onEntries, reload: onReload, stats: onStats }
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      if (source !== state.source) return
      if (event.lastEventId) state.cursor = event.lastEventId
      handler(JSON.parse(event.data))
    })
  }
}

function restart() {
  clearRows()
  state.cursor = ''
  connect(false)
}

function clearRows() {
  state.rows = []
  state.pending = []
  state.keys.clear()
  state.expanded.clear()
  state.letGo = 0
  state.current = null
  for (const node of state.nodes.values()) node.remove()
  state.nodes.clear()
  state.dirty = true
  list.scrollTop = 0
  updatePause()
  schedule()
}

function onHello(hello) {
  state.hello = hello
  $('stack').textContent = hello.stack ? `— ${hello.stack}` : ''
  document.title = hello.stack ? `liftoff debugger — ${hello.stack}` : 'liftoff debugger'
  const sources = $('sources')
  sources.replaceChildren(...(hello.sources || []).map((name) => {
    const option = document.createElement('option')
    option.value = name
    return option
  }))
  const collector = hello.collectorUrl || 'http://127.0.0.1:8080'
  $('empty-example').textContent =
    `curl ${collector}/v1/track -u "$KEY:" -H 'Content-Type: application/json' \\\n` +
    `  -d '{"userId": "u-1", "event": "Signed Up", "properties": {"plan": "pro"}}'`
}

function onReload(message) {
  clearRows()
  const why = {
    reset: 'The tracking API was reset: what arrives from now on is shown.',
    'new stream': 'liftoff local started with a new stream: its events are shown.',
    deleted: 'Quarantined events were deleted from the stream (replayed): the list was reloaded.',
  }
  showNotice(why[message.why] || 'Reloaded.')
}

function showNotice(text, error = false) {
  const notice = $('notice')
  notice.textContent = text
  notice.classList.toggle('error', error)
  notice.hidden = !text
  announce(text)
}

function onEntries(message) {
  if (message.missed) state.letGo += message.missed
  const now = Date.now()
  const fresh = []
  for (const row of message.entries) {
    const key = keyOf(row)
    if (state.keys.has(key)) continue
    state.keys.add(key)
    row.n = state.nextN++
    fresh.push(row)
    if (row.messageId) remember(state.listed, row.messageId, now)
  }
  if (state.paused) {
    state.pending.push(...fresh)
    trim(state.pending)
    updatePause()
  } else if (fresh.length) {
    insert(fresh)
  }
  scheduleArrivals()
}

function trim(rows) {
  const excess = rows.length - MAX_ROWS
  if (excess <= 0) return
  for (const row of rows.splice(0, excess)) {
    state.keys.delete(keyOf(row))
    state.expanded.delete(row.n)
  }
  state.letGo += excess
  state.dirty = true
}

function insert(rows) {
  // New rows go on top; someone reading further down keeps their place.
  if (list.scrollTop > 1) state.scrollAdjust += rows.reduce((sum, row) => sum + rowHeight(row), 0)
  state.rows.push(...rows)
  trim(state.rows)
  state.dirty = true
}

// --- pause, reset --------------------------------------------------------------------------

function updatePause() {
  const button = $('pause')
  button.setAttribute('aria-pressed', String(state.paused))
  button.textContent = state.paused
    ? `Resume${state.pending.length ? ` (${count(state.pending.length)} new)` : ''}`
    : 'Pause'
  const node = $('connection')
  if (node.dataset.state === 'live' || node.dataset.state === 'paused') setConnection('live')
}

$('pause').addEventListener('click', () => {
  state.paused = !state.paused
  if (!state.paused && state.pending.length) {
    insert(state.pending)
    state.pending = []
  }
  updatePause()
  schedule()
})

$('reset').addEventListener('click', async () => {
  const button = $('reset')
  button.disabled = true
  try {
    // Same origin: the browser sends this page's Origin, which the tracking API accepts.
    const response = await fetch('/reset', { method: 'POST' })
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}))
      throw new Error(answer.error || `HTTP ${response.status}`)
    }
  } catch (error) {
    showNotice(`Reset failed: ${error.message}`, true)
  } finally {
    button.disabled = false
  }
})

// --- stats and the chart -------------------------------------------------------------------

function onStats(stats) {
  state.stats = stats
  $('count-accepted').textContent = count(stats.accepted)
  $('count-quarantined').textContent = count(stats.quarantined)
  $('count-dead').textContent = count(stats.deadLettered)
  $('count-rows').textContent = count(stats.warehouseRows)
  const lag = Object.entries(stats.lag || {})
  $('count-lag').textContent = lag.length
    ? lag.map(([name, value]) => `${name} ${count(value)}`).join(' · ')
    : '–'
  drawChart(stats.perSecond || [])
  updateSummary()
}

function drawChart(perSecond) {
  const svg = $('chart')
  const width = 120
  const height = 32
  const series = perSecond.slice(-width)
  const peak = Math.max(1, ...series.map(([accepted, quarantined]) => accepted + quarantined))
  const ns = 'http://www.w3.org/2000/svg'
  const bars = []
  series.forEach(([accepted, quarantined], index) => {
    const x = width - series.length + index
    const total = ((accepted + quarantined) / peak) * height
    const q = (quarantined / peak) * height
    if (total - q > 0) {
      const bar = document.createElementNS(ns, 'rect')
      bar.setAttribute('x', x)
      bar.setAttribute('width', 0.8)
      bar.setAttribute('y', height - total)
      bar.setAttribute('height', total - q)
      bars.push(bar)
    }
    if (q > 0) {
      const bar = document.createElementNS(ns, 'rect')
      bar.setAttribute('class', 'q')
      bar.setAttribute('x', x)
      bar.setAttribute('width', 0.8)
      bar.setAttribute('y', height - q)
      bar.setAttribute('height', q)
      bars.push(bar)
    }
  })
  svg.replaceChildren(...bars)
  const [nowAccepted, nowQuarantined] = series.length ? series[series.length - 1] : [0, 0]
  $('chart-label').textContent =
    `events per second, last 2 minutes: now ${count(nowAccepted)}` +
    `${nowQuarantined ? ` (+${count(nowQuarantined)} quarantined)` : ''}, peak ${count(peak === 1 && !series.length ? 0 : peak)}`
}

function updateSummary() {
  const shown = state.rows.length
  const quarantined = state.rows.reduce((sum, row) => sum + (row.k === 'q'), 0)
  const parts = []
  const filtered = Object.keys(state.filters).length > 0
  parts.push(`${count(shown)} ${filtered ? 'matching ' : ''}event${shown === 1 ? '' : 's'}, newest first`)
  if (quarantined) parts.push(`${count(quarantined)} quarantined`)
  if (state.letGo) {
    parts.push(`${count(state.letGo)} older not shown (this page keeps the newest ${count(MAX_ROWS)}; the warehouse and the archive keep every event)`)
  }
  const views = state.stats && state.stats.views
  const dropped = views ? views.events.dropped + views.quarantine.dropped : 0
  if (dropped && !state.letGo) parts.push(`the tracking API let ${count(dropped)} older go`)
  if (state.paused) parts.push(`paused: ${count(state.pending.length)} new not shown yet`)
  $('summary').textContent = parts.join(' · ')
  const empty = shown === 0
  $('empty').hidden = !empty
  $('empty-title').textContent = filtered ? 'No events match these filters yet.' : 'No events yet.'
  $('empty-hint').hidden = filtered
  $('empty-example').hidden = filtered
}

// --- the list: only the rows in view are in the page ---------------------------------------

function schedule() {
  if (!state.frame) state.frame = requestAnimationFrame(render)
}

function scheduleArrivals() {
  // A flood of events redraws the list ten times a second, not sixty: it could not be read
  // faster, and the page leaves the machine's CPU to the pipeline it shows.
  if (state.frame || state.soon) return
  const wait = state.lastRender + ARRIVALS_MS - performance.now()
  if (wait <= 0) return schedule()
  state.soon = setTimeout(() => {
    state.soon = 0
    schedule()
  }, wait)
}

function measureRows() {
  // Row heights come from the stylesheet (they differ on a phone): measured on hidden rows.
  const heights = []
  for (const kind of ['e', 'q']) {
    const probe = buildRow({ k: kind, n: 0, seq: 0, type: 'track', name: 'x', reason: 'x' })
    probe.classList.add('probe')
    probe.setAttribute('aria-hidden', 'true')
    probe.removeAttribute('role')
    rowsEl.append(probe)
    heights.push(probe.offsetHeight)
    probe.remove()
  }
  if (heights[0] && (heights[0] !== state.rowH || heights[1] !== state.rowQH)) {
    ;[state.rowH, state.rowQH] = heights
    state.dirty = true
  }
}

function layout() {
  const rows = state.rows
  const n = rows.length
  const offsets = new Float64Array(n + 1)
  for (let d = 0; d < n; d++) offsets[d + 1] = offsets[d] + rowHeight(rows[n - 1 - d])
  state.offsets = offsets
  rowsEl.style.height = `${offsets[n]}px`
  state.dirty = false
}

function indexAt(y) {
  // The display index of the row at height y.
  const offsets = state.offsets
  let low = 0
  let high = offsets.length - 2
  if (high < 0) return 0
  while (low < high) {
    const middle = (low + high + 1) >> 1
    if (offsets[middle] <= y) low = middle
    else high = middle - 1
  }
  return low
}

function displayIndex(n) {
  // Rows are in order of their numbers: a binary search.
  const rows = state.rows
  let low = 0
  let high = rows.length - 1
  while (low <= high) {
    const middle = (low + high) >> 1
    if (rows[middle].n === n) return rows.length - 1 - middle
    if (rows[middle].n < n) low = middle + 1
    else high = middle - 1
  }
  return -1
}

function render() {
  state.frame = 0
  state.lastRender = performance.now()
  if (state.dirty) layout()
  if (state.scrollAdjust) {
    list.scrollTop += state.scrollAdjust
    state.scrollAdjust = 0
  }
  const rows = state.rows
  const n = rows.length
  const first = Math.max(0, indexAt(list.scrollTop) - OVERSCAN)
  const last = Math.min(n - 1, indexAt(list.scrollTop + list.clientHeight) + OVERSCAN)
  const wanted = []
  for (let d = first; d <= last; d++) wanted.push(d)
  // The row with the keyboard focus stays in the page wherever it scrolled to.
  const focused = state.focused === null ? -1 : displayIndex(state.focused)
  if (focused >= 0 && (focused < first || focused > last)) {
    wanted.push(focused)
    wanted.sort((a, b) => a - b)
  }
  const keep = new Set(wanted.map((d) => rows[n - 1 - d].n))
  for (const [number, node] of state.nodes) {
    if (!keep.has(number)) {
      node.remove()
      state.nodes.delete(number)
    }
  }
  if (state.current === null || displayIndex(state.current) < 0 || !keep.has(state.current)) {
    state.current = wanted.length ? rows[n - 1 - wanted[0]].n : null
  }
  const now = Date.now()
  let previous = null
  for (const d of wanted) {
    const row = rows[n - 1 - d]
    let node = state.nodes.get(row.n)
    if (!node) {
      node = buildRow(row)
      state.nodes.set(row.n, node)
    }
    node.style.top = `${state.offsets[d]}px`
    node.setAttribute('aria-posinset', String(d + 1))
    node.setAttribute('aria-setsize', String(n))
    node.firstChild.tabIndex = row.n === state.current ? 0 : -1
    const expected = previous ? previous.nextSibling : rowsEl.firstChild
    if (node !== expected) rowsEl.insertBefore(node, expected)
    previous = node
    if (row.shownAt === undefined) {
      row.shownAt = now
      if (row.messageId) remember(state.arrivals, row.messageId, now)
    }
  }
  // Opened rows: their details' height, once in the page.
  let changed = false
  for (const [number, height] of state.expanded) {
    const node = state.nodes.get(number)
    if (!node) continue
    const detail = node.lastChild.offsetHeight
    if (Math.abs(detail - height) > 0.5) {
      state.expanded.set(number, detail)
      changed = true
    }
  }
  if (changed) {
    state.dirty = true
    schedule()
  }
  updateSummary()
}

list.addEventListener('scroll', schedule, { passive: true })
new ResizeObserver(() => {
  measureRows()
  schedule()
}).observe(list)

// --- one row ---------------------------------------------------------------------------------

function describe(row) {
  // What the list shows as the event's name.
  switch (row.type) {
    case 'track':
    case 'page':
    case 'screen':
      return row.name
    case 'group':
      return row.groupId !== undefined ? `group ${row.groupId}` : row.name
    case 'alias':
      return row.previousId !== undefined ? `${row.previousId} → ${row.userId ?? ''}` : row.name
    default:
      return row.name
  }
}

function buildRow(row) {
  const node = el('div', 'row')
  node.setAttribute('role', 'listitem')
  node.dataset.kind = row.k
  node.dataset.n = String(row.n)
  const button = el('button', 'summary-button')
  button.type = 'button'
  button.id = `row-${row.n}`
  button.setAttribute('aria-expanded', String(state.expanded.has(row.n)))
  button.setAttribute('aria-controls', `detail-${row.n}`)
  button.append(el('span', 'time', clock(row.receivedAt)))
  button.lastChild.title = row.receivedAt || ''
  button.append(el('span', 'type', row.type || '?'))
  const name = describe(row)
  button.append(el('span', name === undefined || name === null || name === '' ? 'name none' : 'name', name || '—'))
  button.append(el('span', 'source', row.source || ''))
  const user = row.userId !== undefined ? row.userId : row.anonymousId
  const anonymous = row.userId === undefined && row.anonymousId !== undefined
  button.append(el('span', anonymous ? 'user anonymous' : 'user', anonymous ? `anon ${user}` : user ?? ''))
  if (row.k === 'q') {
    // "quarantined: code"; on a phone only the code shows (the row is red), the rest is read out.
    const who = row.consumer && row.consumer !== 'collector' ? `dead-lettered by ${row.consumer}` : 'quarantined'
    const status = el('span', 'status')
    status.append(el('span', 'status-word', row.code ? `${who}: ` : who))
    if (row.code) status.append(document.createTextNode(row.code))
    button.append(status)
    const reason = el('span', 'reason', row.reason || '')
    reason.title = row.reason || ''
    button.append(reason)
  }
  button.addEventListener('click', () => toggle(row.n))
  node.append(button)
  const detail = el('div', 'detail')
  detail.id = `detail-${row.n}`
  detail.setAttribute('role', 'region')
  detail.setAttribute('aria-labelledby', button.id)
  detail.hidden = !state.expanded.has(row.n)
  if (!detail.hidden) fillDetail(detail, row)
  node.append(detail)
  return node
}

function rowByNumber(n) {
  const d = displayIndex(n)
  return d < 0 ? null : state.rows[state.rows.length - 1 - d]
}

function toggle(n) {
  const row = rowByNumber(n)
  const node = state.nodes.get(n)
  if (!row || !node) return
  const button = node.firstChild
  const detail = node.lastChild
  if (state.expanded.has(n)) {
    state.expanded.delete(n)
    detail.hidden = true
    detail.replaceChildren()
    button.setAttribute('aria-expanded', 'false')
  } else {
    state.expanded.set(n, 0)
    fillDetail(detail, row)
    detail.hidden = false
    button.setAttribute('aria-expanded', 'true')
  }
  state.dirty = true
  render()
}

function fillDetail(detail, row) {
  const parts = []
  if (row.k === 'q') {
    const reason = el('p', 'reason-full')
    const by = row.consumer && row.consumer !== 'collector' ? `Dead-lettered by ${row.consumer}` : 'Quarantined by the collector'
    reason.append(el('strong', null, `${by}: `), document.createTextNode(row.reason || '(no reason given)'))
    parts.push(reason)
  }
  const meta = el('dl', 'meta')
  const add = (label, value, highlight = false) => {
    if (value === undefined || value === null || value === '') return
    meta.append(el('dt', null, label))
    const dd = el('dd', 'mono')
    dd.append(highlight ? el('mark', null, value) : document.createTextNode(String(value)))
    meta.append(dd)
  }
  add('code', row.code, true)
  add('field', row.field, true)
  add('received at', row.receivedAt)
  add('message id', row.messageId)
  add('source', row.source)
  add('stream', `${row.k === 'q' ? 'DEADLETTER' : 'EVENTS'} sequence ${row.seq}, subject ${row.subject}`)
  add('route', row.route)
  add('index in request', row.index)
  add('position', row.position)
  parts.push(meta)
  const tools = el('div', 'tools')
  const copy = el('button', null, 'Copy JSON')
  copy.type = 'button'
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(row.raw)
      copy.textContent = 'Copied'
    } catch {
      copy.textContent = 'Copy failed: select the text'
    }
    setTimeout(() => (copy.textContent = 'Copy JSON'), 2000)
  })
  tools.append(copy)
  const user = row.userId !== undefined ? row.userId : row.anonymousId
  if (user !== undefined) {
    const button = el('button', null, 'Only this user')
    button.type = 'button'
    button.addEventListener('click', () => only('user', String(user)))
    tools.append(button)
  }
  if (row.name !== undefined && row.name !== '') {
    const button = el('button', null, `Only “${row.name.length > 40 ? `${row.name.slice(0, 40)}…` : row.name}”`)
    button.type = 'button'
    button.addEventListener('click', () => only('event', String(row.name)))
    tools.append(button)
  }
  parts.push(tools)
  const pre = el('pre', 'json')
  pre.tabIndex = 0 // a scrolling region: reachable by keyboard
  pre.setAttribute('aria-label', 'the event as stored')
  const shown = renderJson(pre, row.raw, row.field)
  if (row.notUtf8) parts.push(el('p', 'note', 'The stored bytes are not UTF-8: shown with � where they could not be read.'))
  if (!shown.json) parts.push(el('p', 'note', 'Not JSON: shown exactly as stored.'))
  else if (row.field && !shown.found) parts.push(el('p', 'note', `The field ${row.field} is not in the event.`))
  parts.push(pre)
  detail.replaceChildren(...parts)
}

// Keyboard: arrows, Home/End and Page Up/Down move between rows; Enter or Space opens one
// (it is a button); Escape closes it from inside.
rowsEl.addEventListener('keydown', (event) => {
  const node = event.target.closest('.row')
  if (!node) return
  const n = Number(node.dataset.n)
  if (event.key === 'Escape' && state.expanded.has(n)) {
    event.preventDefault()
    toggle(n)
    node.firstChild.focus()
    return
  }
  if (!event.target.classList.contains('summary-button')) return
  const d = displayIndex(n)
  const last = state.rows.length - 1
  const page = Math.max(1, Math.floor(list.clientHeight / state.rowH) - 1)
  const moves = { ArrowDown: d + 1, ArrowUp: d - 1, Home: 0, End: last, PageDown: d + page, PageUp: d - page }
  if (!(event.key in moves)) return
  event.preventDefault()
  focusRow(Math.max(0, Math.min(last, moves[event.key])))
})
rowsEl.addEventListener('focusin', (event) => {
  const node = event.target.closest('.row')
  if (!node) return
  state.focused = Number(node.dataset.n)
  state.current = state.focused
  for (const button of rowsEl.querySelectorAll('.summary-button')) {
    button.tabIndex = button === node.firstChild ? 0 : -1
  }
})
rowsEl.addEventListener('focusout', (event) => {
  if (!rowsEl.contains(event.relatedTarget)) state.focused = null
})

function focusRow(d) {
  const row = state.rows[state.rows.length - 1 - d]
  if (!row) return
  const top = state.offsets[d]
  const bottom = state.offsets[d + 1]
  if (top < list.scrollTop) list.scrollTop = top
  else if (bottom > list.scrollTop + list.clientHeight) list.scrollTop = bottom - list.clientHeight
  state.focused = row.n
  state.current = row.n
  render()
  const node = state.nodes.get(row.n)
  if (node) node.firstChild.focus({ preventScroll: true })
}

// --- JSON as stored: indented, every token kept as it is (numbers are not re-read) ---------

class Writer {
  constructor(root, colours) {
    this.stack = [root]
    this.colours = colours
    this.buffer = ''
    this.kind = null
  }

  put(kind, text) {
    const k = this.colours ? kind : null
    if (k !== this.kind) this.flush()
    this.kind = k
    this.buffer += text
  }

  flush() {
    if (!this.buffer) return
    const parent = this.stack[this.stack.length - 1]
    parent.append(this.kind ? el('span', `j-${this.kind}`, this.buffer) : document.createTextNode(this.buffer))
    this.buffer = ''
  }

  open(node) {
    this.flush()
    this.stack[this.stack.length - 1].append(node)
    this.stack.push(node)
  }

  close() {
    this.flush()
    this.stack.pop()
  }
}

function fieldPath(field) {
  // "context.traits.age", "products[0].price" -> ["context", "traits", "age"] ...
  return String(field).replace(/\[(\d+)\]/g, '.$1').split('.').filter(Boolean)
}

function renderJson(target, text, field) {
  const fragment = document.createDocumentFragment()
  const out = new Writer(fragment, text.length <= COLOUR_LIMIT)
  const want = field ? fieldPath(field) : null
  let found = false
  let i = 0
  const end = text.length
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
  const fail = () => {
    throw new SyntaxError('not JSON')
  }
  const space = () => {
    while (i < end && ' \t\n\r'.includes(text[i])) i++
  }
  const string = () => {
    const start = i++
    while (i < end) {
      const c = text.charCodeAt(i)
      if (c === 34) return text.slice(start, ++i)
      if (c === 92) i += 2
      else if (c < 32) fail()
      else i++
    }
    return fail()
  }
  const indent = (depth) => '\n' + '  '.repeat(depth)
  const matches = (path) => want && path.length === want.length && path.every((key, index) => key === want[index])
  const value = (depth, path) => {
    if (depth > MAX_DEPTH) fail()
    space()
    const c = text[i]
    if (c === '{' || c === '[') {
      const object = c === '{'
      const closing = object ? '}' : ']'
      i++
      out.put(null, c)
      space()
      if (text[i] === closing) {
        i++
        out.put(null, closing)
        return
      }
      for (let index = 0; ; index++) {
        out.put(null, indent(depth + 1))
        let key = String(index)
        let mark = null
        let token = null
        if (object) {
          space()
          if (text[i] !== '"') fail()
          token = string()
          key = JSON.parse(token)
        }
        const here = [...path, key]
        if (matches(here)) {
          mark = el('mark', 'hl')
          mark.title = `the field the reason is about: ${field}`
          out.open(mark)
          found = true
        }
        if (object) {
          out.put('k', token)
          space()
          if (text[i++] !== ':') fail()
          out.put(null, ': ')
        }
        value(depth + 1, here)
        if (mark) out.close()
        space()
        if (text[i] === ',') {
          i++
          out.put(null, ',')
          continue
        }
        if (text[i] !== closing) fail()
        i++
        out.put(null, indent(depth) + closing)
        return
      }
    }
    if (c === '"') return out.put('s', string())
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length
        return out.put('l', literal)
      }
    }
    NUMBER.lastIndex = i
    const number = NUMBER.exec(text)
    if (!number) fail()
    i += number[0].length
    return out.put('n', number[0])
  }
  try {
    value(0, [])
    space()
    if (i !== end) fail()
    out.flush()
    target.replaceChildren(fragment)
    return { json: true, found }
  } catch {
    target.replaceChildren(document.createTextNode(text))
    return { json: false, found: false }
  }
}

// --- start ---------------------------------------------------------------------------------

// For tests and benchmarks (read-only): when a messageId reached the page's list, and when
// its row was first rendered (a row pushed past the view by a flood never is).
window.liftoffDebugger = Object.freeze({
  listedAt: (messageId) => state.listed.get(messageId) ?? null,
  shownAt: (messageId) => state.arrivals.get(messageId) ?? null,
  rows: () => state.rows.length,
  letGo: () => state.letGo,
  cursor: () => state.cursor,
})

state.filters = filtersFromUrl()
showFilters(state.filters)
filterBox.open = !phone.matches || Object.keys(state.filters).length > 0
fitFilters()
measureRows()
updatePause()
updateSummary()
connect(false)
