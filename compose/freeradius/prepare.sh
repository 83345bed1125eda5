#!/bin/sh
# Debian's FreeRADIUS made ready to account for sipledger, in place:
#   prepare.sh DICT_DIR RADDB_DIR
# (compose/freeradius/Dockerfile runs it on /usr/share/freeradius and /etc/freeradius/3.0;
# tests/compose runs it on copies and checks the result with `freeradius -C`).
# The Sip-* attributes keep their OpenSIPS names: the two stock dictionaries that
# take those names or numbers are left out and the project's is loaded last
# (radius/freeradius/dictionary.sipledger explains the clash).  Expects
# dictionary.sipledger and clients.conf beside this script.
set -eu
here=$(dirname "$0")
dict=$1
raddb=$2
sed -i -E 's/^\$INCLUDE[[:space:]]+(dictionary\.(columbia_university|ascend\.illegal))[[:space:]]*$/#$INCLUDE \1/' \
    "$dict/dictionary"
cp "$here/dictionary.sipledger" "$dict/dictionary.sipledger"
printf '$INCLUDE dictionary.sipledger\n' >> "$dict/dictionary"
cp "$here/clients.conf" "$raddb/clients.conf"
