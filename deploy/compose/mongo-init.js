// Idempotent initiation of the compose stack's one-member MongoDB replica set "rs0".
// Run by the mongo-init service with mongosh once mongod answers; safe to run again.
//
// Why a replica set of one instead of a standalone: retryable writes, majority write
// concern and the oplog exist only on replica sets, and production is a replica set,
// so the services run against the same semantics in development.
const config = { _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] };

try {
  const status = rs.status();
  print(`replica set ${status.set} is already initiated`);
} catch (error) {
  // 94 = NotYetInitialized: the only error that means "initiate me".
  if (error.code !== 94 && error.codeName !== "NotYetInitialized") {
    throw error;
  }
  rs.initiate(config);
  print("replica set rs0 initiated");
}

// Wait for this member to become primary (an election takes a few seconds), so that
// the services that depend on this container can write as soon as they start. 60 s is
// far above a one-member election and still fails a broken setup in reasonable time.
const deadline = Date.now() + 60 * 1000;
while (!db.hello().isWritablePrimary) {
  if (Date.now() > deadline) {
    print("rs0 has no writable primary after 60 s");
    quit(1);
  }
  sleep(500);
}
print("rs0 primary is ready");
