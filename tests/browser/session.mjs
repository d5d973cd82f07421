// One page in Debian's Chromium (playwright-core), driven by a test one command at a time:
// each line on stdin is a JSON command, each answer one JSON line on stdout
// ({"ok": true, "value": ...} or {"ok": false, "error": "..."}). Used by the debugger tests
// (tests/liftoff_local/test_debugger_browser.py) and benchmarks/debugger.py, which must
// send events, restart liftoff local and look at the page in between.
//
//   {"op": "goto", "url": ...}                     {"op": "viewport", "width", "height"}
//   {"op": "media", "colorScheme": "dark"|"light"}
//   {"op": "waitFor", "selector", "text"?, "state"?, "timeout"?}
//   {"op": "eval", "js": "<expression>"}           {"op": "click"|"focus", "selector"}
//   {"op": "fill", "selector", "value"}            {"op": "press", "selector"?, "key"}
//   {"op": "screenshot", "path", "fullPage"?}      {"op": "reload"}
//   {"op": "report", "clear"?}  console messages, page errors and every request made
//   {"op": "heap"}  the page's JS heap after a garbage collection (CDP)
//   {"op": "close"}
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

const { chromium } = await import('playwright-core')
const profile = mkdtempSync(join(tmpdir(), 'liftoff-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--no-default-browser-check',
  ],
})
const page = context.pages()[0] ?? (await context.newPage())
const report = { console: [], pageErrors: [], requests: [] }
page.on('console', (m) => report.console.push({ type: m.type(), text: m.text() }))
page.on('pageerror', (e) => report.pageErrors.push(String(e)))
page.on('request', (r) => report.requests.push({ method: r.method(), url: r.url() }))
page.on('dialog', (d) => {
  report.pageErrors.push(`dialog opened: ${d.type()} ${d.message()}`)
  d.dismiss().catch(() => {})
})

async function run(command) {
  const { op } = command
  switch (op) {
    case 'goto':
      await page.goto(command.url, { waitUntil: 'load' })
      return page.url()
    case 'media':
      await page.emulateMedia({ colorScheme: command.colorScheme })
      return null
    case 'viewport':
      await page.setViewportSize({ width: command.width, height: command.height })
      return null
    case 'waitFor': {
      const options = command.text === undefined ? {} : { hasText: command.text }
      await page
        .locator(command.selector, options)
        .first()
        .waitFor({ state: command.state || 'visible', timeout: command.timeout ?? 10000 })
      return null
    }
    case 'eval':
      return await page.evaluate(command.js)
    case 'click':
      await page.locator(command.selector).first().click({ timeout: 10000 })
      return null
    case 'focus':
      await page.locator(command.selector).first().focus({ timeout: 10000 })
      return null
    case 'fill':
      await page.locator(command.selector).first().fill(command.value, { timeout: 10000 })
      return null
    case 'press':
      if (command.selector) await page.locator(command.selector).first().press(command.key)
      else await page.keyboard.press(command.key)
      return null
    case 'screenshot':
      await page.screenshot({ path: command.path, fullPage: Boolean(command.fullPage) })
      return command.path
    case 'reload':
      await page.reload({ waitUntil: 'load' })
      return page.url()
    case 'report': {
      const copy = JSON.parse(JSON.stringify(report))
      if (command.clear) {
        report.console.length = 0
        report.pageErrors.length = 0
        report.requests.length = 0
      }
      return copy
    }
    case 'heap': {
      const cdp = await context.newCDPSession(page)
      await cdp.send('HeapProfiler.collectGarbage')
      await cdp.send('Performance.enable')
      const { metrics } = await cdp.send('Performance.getMetrics')
      await cdp.detach()
      const pick = (name) => metrics.find((m) => m.name === name)?.value ?? null
      return { jsHeapUsed: pick('JSHeapUsedSize'), jsHeapTotal: pick('JSHeapTotalSize'), nodes: pick('Nodes') }
    }
    default:
      throw new Error(`unknown op ${op}`)
  }
}

async function close() {
  await context.close().catch(() => {})
  rmSync(profile, { recursive: true, force: true })
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  const command = JSON.parse(line)
  if (command.op === 'close') break
  let answer
  try {
    answer = { ok: true, value: (await run(command)) ?? null }
  } catch (error) {
    answer = { ok: false, error: String(error && error.stack ? error.stack : error) }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}
await close()
process.stdout.write(JSON.stringify({ ok: true, value: 'closed' }) + '\n')
process.exit(0)
