// Browser scenarios of the web chat app in headless Chromium (Debian's, driven by
// playwright-core: no browser download). Run by test_web_app.py against a real stack
// started by stack_server.py:
//
//   node scenarios.mjs <scenario|screenshots> '<stack JSON line>'
//
// Exit 0 when the scenario holds; otherwise the error is printed and the exit code is 1.
import { createECDH, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const { chromium } = await import(pathToFileURL(join(ROOT, "clients/node_modules/playwright-core/index.mjs")).href);

const [scenario, stackJson] = process.argv.slice(2);
const stack = JSON.parse(stackJson);
const [gatewayA, gatewayB] = stack.gateways;
const PASSWORD = "correct horse battery";
// Anything the UI shows after a user action comes within a second or two; a gateway
// restart and the reconnect behind it can take several seconds on a loaded machine.
const UI_TIMEOUT_MS = 15_000;
const RECONNECT_TIMEOUT_MS = 30_000;
const run = Date.now().toString(36);

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function control(action, part) {
  const response = await fetch(`${stack.control}/${action}/${part}`, { method: "POST" });
  assert(response.ok, `${action} ${part}: ${await response.text()}`);
}

/** A page of the app served by `gateway`, with the other gateway as its fallback. */
async function openApp(browser, gateway, other, viewport = { width: 1200, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.goto(`${gateway}/app/?gateways=${encodeURIComponent(other)}`);
  return page;
}

async function register(page, username) {
  await page.getByTestId("login-username").fill(username);
  await page.getByTestId("login-password").fill(PASSWORD);
  await page.getByTestId("register-submit").click();
  await page.getByTestId("connection-status").filter({ hasText: "Online" }).waitFor();
}

async function createRoom(page, name) {
  await page.getByTestId("room-create-name").fill(name);
  await page.getByTestId("room-create-submit").click();
  const code = await page.getByTestId("invite-code").filter({ hasText: "Invite:" }).textContent();
  return code.replace("Invite:", "").trim();
}

async function joinRoom(page, code) {
  await page.getByTestId("join-code-input").fill(code);
  await page.getByTestId("join-code-submit").click();
  await page.getByTestId("room-item").filter({ has: page.locator(`[aria-current="true"]`) }).waitFor();
}

/** Sends `text`; `to`: a username (privately), "" (to everyone again), or omitted (as chosen). */
async function say(page, text, to) {
  if (to !== undefined) await page.getByTestId("message-to").selectOption({ label: to ? `Only ${to}` : "Everyone" });
  await page.getByTestId("message-input").fill(text);
  await page.getByTestId("message-send").click();
}

const item = (page, text) => page.getByTestId("message-item").filter({ hasText: text });

async function texts(page) {
  return page.getByTestId("message-text").allTextContents();
}

/** Two users on different gateways in one room (alice owns it, bob joined with the code). */
async function twoUsers(browser) {
  const alice = await openApp(browser, gatewayA, gatewayB);
  const bob = await openApp(browser, gatewayB, gatewayA);
  const names = { alice: `alice_${run}`, bob: `bob_${run}` };
  await register(alice, names.alice);
  await register(bob, names.bob);
  const code = await createRoom(alice, `general ${run}`);
  await joinRoom(bob, code);
  return { alice, bob, names, code };
}

const scenarios = {
  /** Two users in two browser contexts on different gateways chat both ways. */
  async chat(browser) {
    const { alice, bob, names } = await twoUsers(browser);
    await alice.getByTestId("presence-list").filter({ hasText: names.bob }).waitFor();
    await alice.getByTestId("message-input").pressSequentially("hello b");
    await bob.getByTestId("typing-indicator").filter({ hasText: `${names.alice} is typing` }).waitFor();
    await say(alice, "hello bob");
    await item(bob, "hello bob").waitFor();
    await say(bob, "hi alice");
    await item(alice, "hi alice").waitFor();
    await alice.getByTestId("read-receipts").filter({ hasText: `Seen by ${names.bob}` }).waitFor();
    // Unread: bob looks at another room while alice writes in general.
    await createRoom(bob, `bobs ${run}`);
    await say(alice, "are you there?");
    const general = bob.getByTestId("room-item").filter({ hasText: `general ${run}` });
    await general.getByTestId("unread-badge").filter({ hasText: "1" }).waitFor();
    await general.getByRole("button").click();
    await item(bob, "are you there?").waitFor();
    assert((await general.getByTestId("unread-badge").count()) === 0, "the badge stays after reading");
    assert(JSON.stringify(await texts(bob)) === JSON.stringify(["hello bob", "hi alice", "are you there?"]), `bob sees ${await texts(bob)}`);
  },

  /** A reload keeps the session and shows the history. */
  async reload(browser) {
    const { alice, bob } = await twoUsers(browser);
    for (const text of ["one", "two", "three"]) await say(alice, text);
    await item(bob, "three").waitFor();
    await bob.reload();
    await item(bob, "three").waitFor();
    assert(JSON.stringify(await texts(bob)) === JSON.stringify(["one", "two", "three"]), `after reload: ${await texts(bob)}`);
    const seqs = await bob.getByTestId("message-item").evaluateAll((els) => els.map((el) => Number(el.dataset.seq)));
    assert(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `seqs out of order: ${seqs}`);
  },

  /** A gateway killed mid-chat: reconnecting shows, it comes back, nothing lost or doubled. */
  async failover(browser) {
    const { alice, bob } = await twoUsers(browser);
    await say(alice, "before the crash");
    await item(bob, "before the crash").waitFor();
    await alice.evaluate(() => {
      const seen = (window.__statuses = []);
      const el = document.querySelector('[data-testid="connection-status"]');
      new MutationObserver(() => seen.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
    });
    try {
      await control("kill", "gateway-a");
      await say(alice, "typed during the outage");
      await say(bob, "sent while alice reconnects");
      await alice.waitForFunction(() => window.__statuses.includes("Reconnecting…"), null, { timeout: RECONNECT_TIMEOUT_MS });
      await alice.getByTestId("connection-status").filter({ hasText: "Online" }).waitFor({ timeout: RECONNECT_TIMEOUT_MS });
      await item(bob, "typed during the outage").waitFor({ timeout: RECONNECT_TIMEOUT_MS });
      await item(alice, "sent while alice reconnects").waitFor({ timeout: RECONNECT_TIMEOUT_MS });
      await say(alice, "after");
      await item(bob, "after").waitFor();
      await item(alice, "after").filter({ hasNotText: "sending" }).waitFor();
      for (const page of [alice, bob]) {
        const all = (await texts(page)).sort();
        const expected = ["after", "before the crash", "sent while alice reconnects", "typed during the outage"];
        assert(JSON.stringify(all) === JSON.stringify(expected), `lost or doubled: ${all}`);
      }
    } finally {
      await control("restart", "gateway-a");
    }
  },

  /** A private message is visible only to its recipient. */
  async private(browser) {
    const { alice, bob, names, code } = await twoUsers(browser);
    const carol = await openApp(browser, gatewayA, gatewayB);
    await register(carol, `carol_${run}`);
    await joinRoom(carol, code);
    await alice.getByTestId("message-to").locator("option", { hasText: `Only ${names.bob}` }).waitFor({ state: "attached" });
    await say(alice, "just for bob", names.bob);
    await say(alice, "for everyone", "");
    await item(bob, "for everyone").waitFor();
    await item(carol, "for everyone").waitFor();
    assert((await item(bob, "just for bob").count()) === 1, "bob misses the private message");
    assert((await item(carol, "just for bob").count()) === 0, "carol sees bob's private message");
    await carol.reload();
    await item(carol, "for everyone").waitFor();
    assert((await item(carol, "just for bob").count()) === 0, "carol's history shows the private message");
  },

  /** Bob's bell counts alice's DMs (written by the notifier), the panel lists them, marks them read, opens the room. */
  async notifications(browser) {
    const alice = await openApp(browser, gatewayA, gatewayB);
    const bob = await openApp(browser, gatewayB, gatewayA);
    const names = { alice: `alice_${run}`, bob: `bob_${run}` };
    await register(alice, names.alice);
    await register(bob, names.bob);
    const unread = bob.getByTestId("notifications-unread");
    assert(!(await unread.isVisible()), "a new user's bell shows an unread count");
    await alice.getByTestId("dm-username").fill(names.bob);
    await alice.getByTestId("dm-submit").click();
    await say(alice, "first dm");
    await say(alice, "second dm");
    await item(alice, "second dm").filter({ hasNotText: "sending" }).waitFor();
    // The notifier writes the inbox after the messages are stored and bob's page polls
    // it (the DM room is new to bob's socket): the reconnect bound covers both.
    await unread.filter({ hasText: "2" }).waitFor({ timeout: RECONNECT_TIMEOUT_MS });
    await bob.getByTestId("notifications-bell").click();
    const items = bob.getByTestId("notification-item");
    await items.filter({ hasText: "second dm" }).waitFor();
    const shown = await bob.getByTestId("notification-text").allTextContents();
    assert(JSON.stringify(shown) === JSON.stringify(["second dm", "first dm"]), `the panel lists ${shown}`);
    const kinds = await items.evaluateAll((els) => els.map((el) => el.dataset.kind));
    assert(kinds.every((k) => k === "dm"), `kinds ${kinds}`);
    assert((await items.filter({ hasText: names.alice }).count()) === 2, "the sender is not named");
    await bob.getByTestId("notifications-mark-read").click();
    await unread.waitFor({ state: "hidden" });
    const read = await items.evaluateAll((els) => els.map((el) => el.dataset.read));
    assert(JSON.stringify(read) === '["true","true"]', `after mark read: ${read}`);
    // Read state is the server's: still read after a reload; a new DM counts again.
    await bob.reload();
    await bob.getByTestId("connection-status").filter({ hasText: "Online" }).waitFor();
    await say(alice, "third dm");
    await unread.filter({ hasText: "1" }).waitFor({ timeout: RECONNECT_TIMEOUT_MS });
    await bob.getByTestId("notifications-bell").click();
    await items.filter({ hasText: "third dm" }).getByRole("button").click();
    await item(bob, "third dm").waitFor();
    await bob.getByTestId("notifications-panel").waitFor({ state: "hidden" });
  },

  /** Replies and the thread view, reaction chips toggled on both sides, a file shared and downloaded. */
  async conversations(browser) {
    const { alice, bob, names } = await twoUsers(browser);
    // The parent by its own text (a reply's item also shows its parent's text).
    const parent = (page) => page.getByTestId("message-item").filter({ has: page.getByTestId("message-text").getByText("pick a date", { exact: true }) });
    await say(alice, "pick a date");
    await parent(bob).getByTestId("message-reply").click();
    await bob.getByTestId("reply-banner").filter({ hasText: "pick a date" }).waitFor();
    await say(bob, "friday works");
    const reply = item(alice, "friday works");
    await reply.getByTestId("reply-ref").filter({ hasText: "pick a date" }).waitFor();
    assert(await bob.getByTestId("reply-banner").isHidden(), "the reply banner stays after sending");
    await parent(alice).getByTestId("message-thread").filter({ hasText: "Thread (1)" }).click();
    await alice.getByTestId("thread-view").getByTestId("thread-item").filter({ hasText: "friday works" }).waitFor();
    assert((await alice.getByTestId("thread-parent").textContent()).includes("pick a date"), "the thread names another parent");

    // Reactions: bob's quick 👍 shows on alice's side; alice joins it, then takes hers back.
    await parent(bob).getByTestId("message-react").click();
    const chip = (page) => parent(page).getByTestId("reaction-chip");
    await chip(alice).filter({ hasText: "👍 1" }).waitFor();
    assert((await chip(alice).getAttribute("aria-pressed")) === "false", "bob's reaction is shown as alice's");
    await chip(alice).click();
    await chip(bob).filter({ hasText: "👍 2" }).waitFor();
    await chip(alice).filter({ hasText: "👍 2" }).and(alice.locator('[aria-pressed="true"]')).waitFor();
    await chip(alice).click();
    await chip(bob).filter({ hasText: "👍 1" }).waitFor();
    await chip(alice).filter({ hasText: "👍 1" }).and(alice.locator('[aria-pressed="false"]')).waitFor();

    // A file: alice attaches it, bob downloads it with his token and gets the same bytes.
    const content = `minutes of ${run}\n`;
    await alice.getByTestId("file-input").setInputFiles({ name: "minutes.txt", mimeType: "text/plain", buffer: Buffer.from(content) });
    const link = item(bob, "minutes.txt").getByTestId("file-link");
    await link.waitFor();
    // The share is checked against history, which trails the live message by a batch:
    // a click that lands first shows file_not_found; click again until it downloads.
    let download = null;
    const deadline = Date.now() + UI_TIMEOUT_MS;
    while (!download) {
      const waiting = bob.waitForEvent("download", { timeout: 2_000 }).catch(() => null);
      await link.click();
      download = await waiting;
      assert(download || Date.now() < deadline, "the file never downloaded");
    }
    assert(download.suggestedFilename() === "minutes.txt", `saved as ${download.suggestedFilename()}`);
    const chunks = [];
    for await (const chunk of await download.createReadStream()) chunks.push(chunk);
    assert(Buffer.concat(chunks).toString() === content, "the downloaded bytes differ");

    // After a reload everything comes from history: the reply's parent, the count, the file.
    await bob.reload();
    await item(bob, "friday works").getByTestId("reply-ref").filter({ hasText: "pick a date" }).waitFor();
    await chip(bob).filter({ hasText: "👍 1" }).and(bob.locator('[aria-pressed="true"]')).waitFor();
    await parent(bob).getByTestId("message-thread").filter({ hasText: "Thread (1)" }).waitFor();
    await item(bob, "minutes.txt").getByTestId("file-link").waitFor();

    // A mention while alice looks at another room: an @ badge, then the message marked.
    await createRoom(alice, `side ${run}`);
    await say(bob, `@${names.alice} look at the minutes`);
    const general = alice.getByTestId("room-item").filter({ hasText: `general ${run}` });
    await general.getByTestId("mention-badge").filter({ hasText: "@1" }).waitFor();
    await general.getByRole("button").click();
    await item(alice, "look at the minutes").and(alice.locator(".mention")).waitFor();
    assert((await general.getByTestId("mention-badge").count()) === 0, "the mention badge stays after reading");

    // The parent deleted: the reply stays, marked as a reply to a deleted message.
    await parent(alice).getByTestId("message-delete").click();
    await item(bob, "friday works").getByTestId("reply-ref").filter({ hasText: "a deleted message" }).waitFor();
    assert((await parent(bob).count()) === 0, "the deleted parent is still shown");
  },

  /** The main screens, for the README (docs/img/). */
  // Web Push registration through the app. Headless Chromium has no push service
  // (pushManager.subscribe fails "permission denied" even with the permission
  // granted), so only PushManager's subscribe/getSubscription are replaced, by one
  // returning a subscription with real P-256 keys on FCM's host; the service worker
  // registration, the VAPID key fetch and the notifier's POST/DELETE are real.
  async push(browser) {
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    const sub = {
      endpoint: `https://fcm.googleapis.com/fcm/send/roomcast-test-${run}`,
      p256dh: ecdh.getPublicKey().toString("base64url"),
      auth: randomBytes(16).toString("base64url"),
    };
    const context = await browser.newContext();
    await context.grantPermissions(["notifications"], { origin: new URL(gatewayA).origin });
    await context.addInitScript((s) => {
      let current = null;
      PushManager.prototype.subscribe = async function (options) {
        window.__pushKeyBytes = new Uint8Array(options.applicationServerKey).length;
        current = {
          endpoint: s.endpoint,
          options: { applicationServerKey: options.applicationServerKey },
          toJSON: () => ({ endpoint: s.endpoint, expirationTime: null, keys: { p256dh: s.p256dh, auth: s.auth } }),
          unsubscribe: async () => {
            current = null;
            window.__pushUnsubscribed = true;
            return true;
          },
        };
        return current;
      };
      PushManager.prototype.getSubscription = async function () {
        return current;
      };
    }, sub);
    const page = await context.newPage();
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    await page.goto(`${gatewayA}/app/?gateways=${encodeURIComponent(gatewayB)}`);
    await register(page, `push_${run}`);
    const toggle = page.getByTestId("push-toggle");
    await toggle.filter({ hasText: "Enable push notifications" }).waitFor();
    const isSubscriptions = (r, method) => new URL(r.url()).pathname === "/v1/push/subscriptions" && r.request().method() === method;
    const posted = page.waitForResponse((r) => isSubscriptions(r, "POST"));
    await toggle.click();
    const created = await posted;
    assert(created.status() === 201, `register: ${created.status()} ${await created.text()}`);
    assert((await created.json()).endpoint === sub.endpoint, "the notifier registered another endpoint");
    await toggle.filter({ hasText: "Disable push notifications" }).waitFor();
    // subscribed with the notifier's VAPID public key (an uncompressed P-256 point)
    assert((await page.evaluate(() => window.__pushKeyBytes)) === 65, "not subscribed with the VAPID key");
    assert(await page.evaluate(async () => Boolean(await navigator.serviceWorker.getRegistration("./"))), "no service worker");
    // logging out forgets the subscription, on the server and in the browser
    const deleted = page.waitForResponse((r) => isSubscriptions(r, "DELETE"));
    await page.getByTestId("logout").click();
    const gone = await deleted;
    assert(gone.status() === 204, `unregister answered ${gone.status()}`);
    await page.getByTestId("login-username").waitFor();
    assert(await page.evaluate(() => window.__pushUnsubscribed === true), "the browser kept its subscription");
  },

  async screenshots(browser) {
    const out = join(ROOT, "docs/img");
    const login = await openApp(browser, gatewayA, gatewayB);
    await login.getByTestId("login-username").waitFor();
    await login.screenshot({ path: join(out, "web-login.png") });
    const { alice, bob, names, code } = await twoUsers(browser);
    await createRoom(alice, `random ${run}`);
    await alice.getByTestId("room-item").filter({ hasText: `general ${run}` }).getByRole("button").click();
    await say(alice, "Welcome to Roomcast!");
    await say(bob, "Thanks! Reconnects are invisible here.");
    await say(alice, "Only you can read this one.", names.bob);
    await item(alice, "Only you can read").waitFor();
    await bob.getByTestId("message-input").pressSequentially("typing…");
    await alice.getByTestId("typing-indicator").filter({ hasText: "typing" }).waitFor();
    await alice.screenshot({ path: join(out, "web-chat.png") });
    const phone = await openApp(browser, gatewayB, gatewayA, { width: 390, height: 844 });
    await register(phone, `phone_${run}`);
    await joinRoom(phone, code);
    await item(phone, "Reconnects are invisible").waitFor();
    await phone.screenshot({ path: join(out, "web-phone.png"), fullPage: true });
  },
};

const profile = mkdtempSync(join(tmpdir(), "roomcast-chromium-"));
const browser = await chromium.launch({ executablePath: process.env.ROOMCAST_CHROMIUM ?? "/usr/bin/chromium", args: ARGS, env: { ...process.env, HOME: profile } });
let code = 0;
try {
  const fn = scenarios[scenario];
  assert(fn, `unknown scenario ${scenario}`);
  await fn(browser);
  console.log(`${scenario}: ok`);
} catch (error) {
  console.error(`${scenario}: ${error.stack ?? error}`);
  code = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
