"""What ``bench.tts`` has its voices say: everyday assistant answers, in French and their
English translation, and the first chunk of each (what the pipeline sends first)."""

from __future__ import annotations

FRENCH_ANSWERS = [
    "Il fait beau aujourd'hui à Lyon, avec un maximum de 24 degrés.",
    "Votre rendez-vous chez le dentiste est demain à 9 heures.",
    "La capitale de l'Espagne est Madrid.",
    "J'ai ajouté du lait et des œufs à votre liste de courses.",
    "Le prochain train pour Marseille part à 18 h 45, voie 7.",
    "Il est actuellement 14 h 20.",
    "D'accord, je lance un minuteur de dix minutes.",
    "Je n'ai pas compris votre question. Pouvez-vous la reformuler ?",
    "Demain, il va pleuvoir toute la matinée, pensez à prendre un parapluie.",
    "La tour Eiffel mesure environ 330 mètres de haut.",
    "Votre colis sera livré jeudi entre 10 heures et midi.",
    "Bonne nuit, et à demain !",
    "Le restaurant le plus proche est à cinq minutes à pied.",
    "J'ai envoyé le message à Sophie.",
    "Le match commence à 20 heures sur la deuxième chaîne.",
    "Pour faire des crêpes, il faut de la farine, des œufs, du lait et une pincée de sel.",
    "La réunion d'équipe a été déplacée à vendredi matin.",
    "Il reste 15 % de batterie sur votre téléphone.",
    "Le musée du Louvre est fermé le mardi.",
    "N'oubliez pas d'appeler votre mère ce soir.",
    "La pharmacie de garde se trouve rue Victor Hugo.",
    "Il y a des bouchons sur l'autoroute, comptez vingt minutes de plus.",
    "Le film dure deux heures et quart.",
    "Votre vol pour Montréal décolle à 7 h 30 de l'aéroport Charles de Gaulle.",
    "Bien sûr, je lance votre musique préférée.",
    "L'eau est à 19 degrés, elle est encore un peu fraîche.",
    "Votre facture d'électricité s'élève à 62 euros ce mois-ci.",
    "Le marché est ouvert tous les samedis de 8 heures à 13 heures.",
    "Je ne trouve pas ce contact dans votre carnet d'adresses.",
    "Victor Hugo a écrit Les Misérables en 1862.",
    "Le soleil se couche ce soir à 20 h 15.",
    "Vous avez trois nouveaux messages, dont un de votre banque.",
    "Attention, la route est glissante ce matin à cause du verglas.",
    "La boulangerie ouvre à 7 heures et ferme à 19 h 30.",
    "Je peux réserver une table pour quatre personnes samedi soir.",
    "C'est noté : vous devez sortir les poubelles mercredi.",
]
ENGLISH_ANSWERS = [
    "It is sunny today in Lyon, with a high of 24 degrees.",
    "Your dentist appointment is tomorrow at 9 o'clock.",
    "The capital of Spain is Madrid.",
    "I added milk and eggs to your shopping list.",
    "The next train to Marseille leaves at 6:45 pm from platform 7.",
    "It is currently 2:20 pm.",
    "All right, I am starting a ten minute timer.",
    "I did not understand your question. Could you rephrase it?",
    "Tomorrow it will rain all morning, remember to take an umbrella.",
    "The Eiffel Tower is about 330 meters tall.",
    "Your parcel will be delivered on Thursday between 10 am and noon.",
    "Good night, and see you tomorrow!",
    "The nearest restaurant is a five minute walk away.",
    "I sent the message to Sophie.",
    "The match starts at 8 pm on channel two.",
    "To make pancakes, you need flour, eggs, milk and a pinch of salt.",
    "The team meeting has been moved to Friday morning.",
    "Your phone has 15% battery left.",
    "The Louvre museum is closed on Tuesdays.",
    "Do not forget to call your mother tonight.",
    "The pharmacy on duty is on Victor Hugo street.",
    "There is traffic on the highway, allow twenty more minutes.",
    "The film lasts two hours and a quarter.",
    "Your flight to Montreal takes off at 7:30 am from Charles de Gaulle airport.",
    "Of course, I am playing your favorite music.",
    "The water is 19 degrees, it is still a little cold.",
    "Your electricity bill comes to 62 euros this month.",
    "The market is open every Saturday from 8 am to 1 pm.",
    "I cannot find this contact in your address book.",
    "Victor Hugo wrote Les Misérables in 1862.",
    "The sun sets tonight at 8:15 pm.",
    "You have three new messages, one of them from your bank.",
    "Be careful, the road is slippery this morning because of black ice.",
    "The bakery opens at 7 am and closes at 7:30 pm.",
    "I can book a table for four people on Saturday evening.",
    "Noted: you need to take out the bins on Wednesday.",
]
ANSWERS = {"fr": FRENCH_ANSWERS, "en": ENGLISH_ANSWERS}
FIRST_CHUNK_WORDS = 4


def first_chunk(text: str) -> str:
    """The first few words of an answer (to its first comma if sooner): what the pipeline
    sends first, so the voice starts while the rest is written."""
    head = text.split(",")[0].split()
    return " ".join(head[:FIRST_CHUNK_WORDS])
