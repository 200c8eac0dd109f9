# The admin's dashboard and full-text search (docs/admin.md). Not atomic: on PostgreSQL the
# indexes are built with CREATE INDEX CONCURRENTLY, so that logins (each writes an audit event)
# go on while they build on a large table.

from django.db import migrations, models

from django_authfw.schema_operations import AddAuditSearchIndex, AddIndexConcurrently


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('django_authfw', '0002_audit_search_indexes'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='auditlog',
            index=models.Index(fields=['action', 'outcome', 'created_at'], name='idx_audit_action_outcome'),
        ),
        AddIndexConcurrently(
            model_name='auditlog',
            index=models.Index(condition=models.Q(('action', 'login'), ('outcome', False)), fields=['created_at', 'resource', 'ip_address'], name='idx_audit_login_failures'),
        ),
        AddAuditSearchIndex(model_name='auditlog'),
    ]
