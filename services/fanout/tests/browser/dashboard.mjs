// Opens the fanout's dashboard in headless Chromium and reports what it
// shows. Driven by the `browser` test (tests/fanout/browser.rs):
//
//   node dashboard.mjs <dashboard url> <game id> <model version>
//
// Prints `live` once the page has subscribed, then waits for the game's row
// and the model's metrics, prints them as one JSON line and exits 0; exits 1
// with the reason otherwise. Needs Chromium (CHROMIUM, default
// /usr/bin/chromium) and playwright-core (scripts/setup.sh installs both).
import { createRequire } from 'node:module';

const [url, game, model] = process.argv.slice(2);
if (!url || !game || !model) {
  console.error('usage: node dashboard.mjs <url> <game id> <model version>');
  process.exit(2);
}
const require = createRequire(import.meta.url);
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch {
  console.error('playwright-core is missing: run `bash scripts/setup.sh` (it installs it in .tools/browser)');
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, { timeout: 20000 });
  console.log('live');
  const row = page.locator(`tr[data-game="${game}"]`);
  await row.waitFor({ timeout: 20000 });
  await page.waitForFunction((v) => document.getElementById('model').textContent === v
    && document.getElementById('metrics-model').textContent === v, model, { timeout: 20000 });
  const cells = await row.locator('td').allTextContents();
  const seen = {
    game: cells[0],
    home: cells[1],
    away: cells[2],
    sport: cells[3],
    prob: cells[4],
    games: await page.textContent('#games'),
    model: await page.textContent('#model'),
    metrics_model: await page.textContent('#metrics-model'),
    accuracy: await page.textContent('#accuracy'),
    brier: await page.textContent('#brier'),
    errors,
  };
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(`dashboard: ${e.message.split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
