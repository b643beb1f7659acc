"""The models djangochannelsrestframework's tests import from ``tests.models``; its sdist
leaves them out, so they are rebuilt here from how the tests use them."""

from django.db import models


class TestModel(models.Model):
    __test__ = False

    name = models.CharField(max_length=255)


class TestModelWithCustomPK(models.Model):
    __test__ = False

    name = models.CharField(max_length=255, primary_key=True)
    description = models.CharField(max_length=255, null=True, blank=True)
