"""Carry DRF's plaintext tokens over as digests, then drop DRF's table.

Until this migration, API tokens were ``rest_framework.authtoken`` tokens, stored as they are in
``authtoken_token.key``. Each becomes an ``ApiToken`` holding the SHA-256 of that key (as
``deploy.api.auth.hash_key`` computes it), its first characters and its creation time, so every
token in use keeps working. Then the plaintext table is dropped and the app's migration records
are deleted: ``rest_framework.authtoken`` is no longer installed. The table is read with SQL, not
through DRF's model, for that reason. A database that never had it (a new one) has nothing to carry.

Not reversible in substance: a digest cannot give the token back, so going back leaves DRF's table
gone and the tokens as digests.
"""

import hashlib
from datetime import timezone

from django.db import migrations
from django.db.migrations.recorder import MigrationRecorder

OLD_TABLE = "authtoken_token"
PREFIX_LENGTH = 8  # deploy.api.users.services.TOKEN_PREFIX_LENGTH when this was written


def _aware(moment):
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def carry_over_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    quote = schema_editor.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} FROM {quote(OLD_TABLE)}")
        rows = cursor.fetchall()
    ApiToken = apps.get_model("users", "ApiToken")
    ApiToken.objects.using(connection.alias).bulk_create(
        ApiToken(user_id=user_id, digest=hashlib.sha256(key.encode()).hexdigest(), prefix=key[:PREFIX_LENGTH],
                 created=_aware(created))
        for key, user_id, created in rows
    )
    schema_editor.execute(f"DROP TABLE {quote(OLD_TABLE)}")
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()


class Migration(migrations.Migration):
    dependencies = [("users", "0001_api_token")]

    operations = [migrations.RunPython(carry_over_tokens, migrations.RunPython.noop)]
