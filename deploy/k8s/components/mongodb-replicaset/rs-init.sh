#!/bin/bash
# Sidecar of every MongoDB pod: on mongodb-0 it initiates the replica set and creates
# the users (idempotently, on every start), then idles; on the others it only idles.
# Runs in the pod's network namespace, so it can use MongoDB's localhost exception to
# create the first user on a fresh set.
set -u
ordinal="${POD_NAME##*-}"
if [ "$ordinal" != "0" ]; then
  exec sleep infinity
fi

until mongosh --quiet --host 127.0.0.1 --eval 'db.adminCommand({ping: 1})' >/dev/null 2>&1; do
  sleep 2
done

# Phase 1, on this member over localhost: initiate the set, wait for a primary, create
# the administrator while no user exists. Retried until it succeeds (e.g. while the
# other members are still starting: initiation needs them all).
until mongosh --quiet --host 127.0.0.1 /scripts/rs-init-local.js; do
  echo "rs-init: replica set not initiated yet; retrying in 5 s"
  sleep 5
done

# Phase 2, against the whole set (wherever the primary is): the services' users, with
# the passwords currently in the Secret.
hosts="mongodb-0.mongodb:27017,mongodb-1.mongodb:27017,mongodb-2.mongodb:27017"
until mongosh --quiet "mongodb://${hosts}/admin?replicaSet=rs0" /scripts/rs-users.js; do
  echo "rs-init: could not create the service users yet; retrying in 5 s"
  sleep 5
done

echo "rs-init: replica set rs0 and users are in place"
exec sleep infinity
