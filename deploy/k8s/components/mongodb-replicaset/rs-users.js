// Phase 2 of rs-init.sh, run by mongosh against the replica set (on its primary).
// Creates or updates one user per service, each limited to its own database, with the
// passwords from the Secret roomcast-mongodb-users. Idempotent.
const env = process.env;
const admin = db.getSiblingDB("admin");
admin.auth(env.MONGO_ADMIN_USERNAME, env.MONGO_ADMIN_PASSWORD);

const users = [
  { user: "roomcast-auth", pwd: env.ROOMCAST_AUTH_DB_PASSWORD, db: "roomcast_auth" },
  { user: "roomcast-rooms", pwd: env.ROOMCAST_ROOMS_DB_PASSWORD, db: "roomcast_rooms" },
  { user: "roomcast-history", pwd: env.ROOMCAST_HISTORY_DB_PASSWORD, db: "roomcast_history" },
];

for (const u of users) {
  if (!u.pwd) {
    throw new Error(`no password for ${u.user} in the Secret roomcast-mongodb-users`);
  }
  const roles = [{ role: "readWrite", db: u.db }];
  if (admin.getUser(u.user) === null) {
    admin.createUser({ user: u.user, pwd: u.pwd, roles: roles });
    print(`rs-init: user ${u.user} created`);
  } else {
    admin.updateUser(u.user, { pwd: u.pwd, roles: roles });
    print(`rs-init: user ${u.user} updated`);
  }
}
