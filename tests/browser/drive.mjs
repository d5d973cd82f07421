// Node side of the client tests (tests/services/test_browser_clients.py runs it):
//
//   node drive.mjs bundle <outfile>                  analytics-next's npm build, bundled for a page
//   node drive.mjs snippet <host> <writeKey> <json>  Segment's standard snippet, host changed
//   node drive.mjs browse <url> <json>               open the page in Chromium, report traffic
//   node drive.mjs node-sdk <host> <writeKey> <run>  the same calls through analytics-node
//
// Every command prints one JSON document on stdout.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const [command, ...args] = process.argv.slice(2)

async function bundle(outfile) {
  const { build } = await import('esbuild')
  await build({
    stdin: {
      contents:
        "import { AnalyticsBrowser } from '@segment/analytics-next'\n" +
        'window.AnalyticsBrowser = AnalyticsBrowser\n',
      resolveDir: here,
    },
    bundle: true,
    format: 'iife',
    platform: 'browser',
    minify: true,
    outfile,
    logLevel: 'error',
  })
  return { outfile }
}

async function snippet(host, writeKey, options) {
  const { default: generator } = await import('@segment/snippet')
  return { snippet: generator.min({ host, apiKey: writeKey, ...JSON.parse(options) }) }
}

// Events delivered to the collector (2xx answers), counted from the request bodies.
function deliveredEvents(request, status) {
  if (request.method() !== 'POST' || status >= 300) return 0
  const body = JSON.parse(request.postData() || '{}')
  return Array.isArray(body.batch) ? body.batch.length : 1
}

async function browse(url, options) {
  const { expectedEvents, timeoutMs = 30000, quietMs = 1500 } = JSON.parse(options)
  const { chromium } = await import('playwright-core')
  const profile = mkdtempSync(join(tmpdir(), 'liftoff-chromium-'))
  // A fresh profile for every run: nothing persisted (queued events, ids) leaks between tests.
  // The collector's certificate is self-signed (loopback); everything else is real.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
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
  const report = { requests: [], console: [], pageErrors: [], delivered: 0 }
  try {
    const page = context.pages()[0] ?? (await context.newPage())
    let lastActivity = Date.now()
    page.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`))
    page.on('pageerror', (e) => report.pageErrors.push(String(e)))
    page.on('request', () => (lastActivity = Date.now()))
    page.on('requestfinished', async (request) => {
      lastActivity = Date.now()
      const response = await request.response()
      const status = response ? response.status() : 0
      report.delivered += deliveredEvents(request, status)
      report.requests.push({
        method: request.method(),
        url: request.url(),
        status,
        headers: await request.allHeaders(),
        responseHeaders: response ? await response.allHeaders() : {},
      })
    })
    page.on('requestfailed', (request) => {
      lastActivity = Date.now()
      report.requests.push({
        method: request.method(),
        url: request.url(),
        status: 0,
        failure: request.failure()?.errorText,
      })
    })
    await page.goto(url)
    const deadline = Date.now() + timeoutMs
    // Done when every expected event was answered 2xx and the network has been quiet a while
    // (a duplicate sent late would still be seen).
    while (Date.now() < deadline) {
      if (report.delivered >= expectedEvents && Date.now() - lastActivity > quietMs) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    report.pageState = await page.evaluate(() => window.__liftoff || null)
  } finally {
    await context.close()
    rmSync(profile, { recursive: true, force: true })
  }
  return report
}

async function nodeSdk(host, writeKey, run) {
  const { Analytics } = await import('@segment/analytics-node')
  const errors = []
  const analytics = new Analytics({ writeKey, host, flushAt: 10, flushInterval: 200 })
  analytics.on('error', (error) => errors.push(String(error?.reason ?? error)))
  const userId = `user-${run}`
  analytics.identify({ userId, traits: { email: 'a@example.com', run } })
  analytics.track({ userId, event: 'Order Completed', properties: { run, total: 9.99 } })
  analytics.page({ userId, category: 'Docs', name: 'Install', properties: { run } })
  analytics.screen({ userId, name: 'Home', properties: { run } })
  analytics.group({ userId, groupId: `acme-${run}`, traits: { name: 'Acme', run } })
  analytics.alias({ userId, previousId: `anon-${run}` })
  await analytics.closeAndFlush({ timeout: 20000 })
  return { errors }
}

const commands = {
  bundle,
  snippet,
  browse,
  'node-sdk': nodeSdk,
}
const run = commands[command]
if (!run) {
  console.error(`unknown command ${command}; use one of ${Object.keys(commands).join(', ')}`)
  process.exit(2)
}
process.stdout.write(JSON.stringify(await run(...args)) + '\n')
// Exit even if a library left a timer behind.
process.exit(0)
