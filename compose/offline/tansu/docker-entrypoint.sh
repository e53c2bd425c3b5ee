#!/bin/bash
# tansu reads the S3 keys of its s3:// storage engine from AWS_ACCESS_KEY_ID
# and AWS_SECRET_ACCESS_KEY only; Docker secrets come as files: the _FILE
# forms are read here, so no key sits in the service's environment.
set -euo pipefail
for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
  file_var=${name}_FILE
  if [[ -n ${!file_var:-} ]]; then
    value=$(<"${!file_var}")
    export "$name=$value"
    unset "$file_var"
  fi
done
exec /usr/local/bin/tansu "$@"
