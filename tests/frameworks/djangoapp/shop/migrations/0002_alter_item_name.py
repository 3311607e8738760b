from django.db import migrations, models


class Migration(migrations.Migration):
    # Altering a field makes django-spanner read the table's constraints from
    # INFORMATION_SCHEMA before it changes the column.
    dependencies = [
        ("shop", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="item",
            name="name",
            field=models.CharField(max_length=80),
        ),
    ]
