import factory
from django.utils import timezone

from billing.models import Plan, Subscription
from usage.models import Customer, Preset, PresetUsage, Project, UsageEvent


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    name = factory.Faker("company")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    customer = factory.SubFactory(CustomerFactory)
    name = factory.Sequence(lambda n: f"project {n}")
    status = Project.Status.ACTIVE


class PresetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Preset

    customer = factory.SubFactory(CustomerFactory)
    name = factory.Sequence(lambda n: f"preset {n}")


class PresetUsageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PresetUsage

    preset = factory.SubFactory(PresetFactory)
    customer = factory.SelfAttribute("preset.customer")
    used_at = factory.LazyFunction(timezone.now)


class UsageEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageEvent

    customer = factory.SubFactory(CustomerFactory)
    metric = UsageEvent.Metric.AI_INTERACTION
    quantity = 1
    occurred_at = factory.LazyFunction(timezone.now)


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan
        django_get_or_create = ("code",)

    code = "free"
    name = factory.LazyAttribute(lambda o: o.code.title())
    price = 0


def subscribe(customer, plan, status=Subscription.Status.ACTIVE):
    """The customer's subscription to ``plan`` over the customer's current period (as a webhook leaves it)."""
    return Subscription.objects.create(
        customer=customer,
        plan=plan,
        status=status,
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )
