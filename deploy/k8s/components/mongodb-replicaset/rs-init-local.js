// Phase 1 of rs-init.sh, run by mongosh on mongodb-0 over 127.0.0.1.
// Idempotent: initiates rs0 only if it has no configuration, creates the administrator
// only while the localhost exception still applies (no user exists yet).
const env = process.env;
const admin = db.getSiblingDB("admin");

function member(i) {
  // mongodb-0 has the higher priority so that it becomes primary and can create the
  // first user through the localhost exception (only valid on this member).
  return { _id: i, host: `mongodb-${i}.mongodb:27017`, priority: i === 0 ? 2 : 1 };
}

if (!db.hello().setName) {
  rs.initiate({ _id: "rs0", members: [0, 1, 2].map(member) });
  print("rs-init: replica set rs0 initiated");
}

let authenticated = false;
try {
  authenticated = admin.auth(env.MONGO_ADMIN_USERNAME, env.MONGO_ADMIN_PASSWORD).ok === 1;
} catch (error) {
  authenticated = false;
}

if (!authenticated) {
  // Elections take seconds; 120 s also covers members that are slow to start.
  const deadline = Date.now() + 120 * 1000;
  while (!db.hello().isWritablePrimary) {
    if (Date.now() > deadline) {
      throw new Error("mongodb-0 did not become primary within 120 s");
    }
    sleep(1000);
  }
  admin.createUser({
    user: env.MONGO_ADMIN_USERNAME,
    pwd: env.MONGO_ADMIN_PASSWORD,
    roles: [{ role: "root", db: "admin" }],
  });
  print("rs-init: administrator created");
}
